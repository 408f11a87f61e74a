package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"

	bolt "go.etcd.io/bbolt"
)

// bucketCommitting records the NAR files a Writer is renaming into place,
// so a crash between the rename and the index row leaves no file that no
// row names: the next Open indexes the file (it was verified and fsynced
// before the rename) or, if it never got there, just forgets the intent.
// Found by the kill -9 test: under a busy index, commits wait for the
// write lock after their rename, and a kill then left several such files.
var bucketCommitting = []byte("committing")

// markCommitting records that name is about to be renamed into place.
func (s *Store) markCommitting(name string) error {
	return s.writes.update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketCommitting).Put([]byte(name), nil)
	})
}

// resumeCommits finishes, at Open, the commits a crash interrupted.
func (s *Store) resumeCommits() error {
	var names []string
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketCommitting).ForEach(func(k, _ []byte) error {
			names = append(names, string(k))
			return nil
		})
	})
	if err != nil || len(names) == 0 {
		return err
	}
	for _, name := range names {
		size, err := s.files.Stat(name)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			err = s.db.Update(func(tx *bolt.Tx) error {
				return tx.Bucket(bucketCommitting).Delete([]byte(name))
			})
		case err == nil:
			err = s.indexNAR(context.Background(), name, size)
		}
		if err != nil {
			return fmt.Errorf("finish commit of %s: %w", name, err)
		}
	}
	return nil
}
