// Package store keeps what the proxy serves on local disk: NAR files under
// nar/<2 chars>/<name>, and a bbolt index of narinfos, NAR sources and the
// NAR files present. Files are written before the index rows that name them,
// so after a crash at any point the index names no file that is missing for
// long: a row whose file is gone is dropped when noticed.
package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Sentinel errors of the store.
var (
	// ErrNotFound means the index has no such entry (or its file is gone).
	ErrNotFound = errors.New("store: not found")
	// ErrLocked means another process holds the index open.
	ErrLocked = errors.New("store: index is in use by another process")
	// ErrSchema means the index was written by an incompatible version.
	ErrSchema = errors.New("store: unsupported index schema")
)

// schemaVersion is bumped whenever the meaning of a bucket's rows changes.
// 2: the narage bucket and the NAR totals are kept with every NAR row
// (narage.go); an index of schema 1 is upgraded at Open (migrate.go), and
// a binary that reads only 1 refuses it from then on.
const (
	schemaVersion  = "2"
	schemaUpgraded = "1"
)

var (
	bucketNarInfo   = []byte("narinfo")
	bucketNARSource = []byte("narsrc")
	bucketNAR       = []byte("nar")
	bucketAux       = []byte("aux")
	bucketMeta      = []byte("meta")
	keySchema       = []byte("schema")
)

// Store is the on-disk cache. It is safe for concurrent use.
type Store struct {
	dir string
	db  *bolt.DB
	// writes shares the write transactions of the fill path's concurrent
	// writers (group commit, see groupCommit).
	writes *groupCommit
	files  NARFiles
	// shared is nil for a node alone; with other nodes on the same
	// storage, it is where their narinfos and NAR sources are found.
	shared Shared
	hot    *hotNarInfos
	access accessLog
	// servedDays are the days narinfos were last served, not yet flushed.
	servedDays servedLog

	// removing holds the NARs whose rows eviction deleted and whose files
	// it has yet to remove; a Commit of the same name takes it out, so the
	// new file stays.
	rmMu     sync.Mutex
	removing map[string]bool

	present  func([]byte) []byte     // Options.Present; nil: served as stored
	now      func() time.Time        // Options.Now
	accessed func(string, time.Time) // Options.Accessed; nil: nobody is told
	// live are the NAR names being written now.
	live liveFiles

	// Totals of the NAR files indexed, kept in memory so a metrics scrape
	// does not walk the index.
	narCount atomic.Int64
	narBytes atomic.Int64
	// narInfos mirrors the index's narinfo count (keyNarInfoCount).
	narInfos atomic.Int64
	upgraded Upgrade // what Open upgraded
}

// Upgrade is an upgrade of the index's schema that Open made.
type Upgrade struct {
	From, To string
	Took     time.Duration
}

// Upgraded says what Open upgraded; a zero Upgrade when nothing.
func (s *Store) Upgraded() Upgrade { return s.upgraded }

// Options configure a Store. The zero value is a plain store.
type Options struct {
	// Present, if set, turns a narinfo as the index holds it into the text
	// served, each time one is read from the index (the in-memory hot set
	// keeps the result, so hits do not pay for it). The proxy's signing key
	// adds its signature here, so narinfos kept before the key was
	// configured are signed too. It must return text unchanged (the same
	// slice) when there is nothing to do, and never fail.
	Present func(text []byte) []byte
	// Files, if set, holds the NAR files instead of the cache dir (an S3
	// bucket); the cache dir keeps the index.
	Files NARFiles
	// Shared, if set, is what other nodes on the same Files see: the store
	// publishes each narinfo there once its NAR is stored, and looks there
	// for what its own index lacks.
	Shared Shared
	// Now, if set, is the clock narinfos are stamped served by (the day a
	// narinfo was last served decides when it may be pruned); for tests.
	Now func() time.Time
	// Accessed, if set, is told of every NAR opened to be served, as the
	// index's access times are: the fleet's eviction orders by the
	// accesses of every node. It is called on the hit path: it must be
	// cheap and never block.
	Accessed func(name string, at time.Time)
}

// Open opens (creating if needed) the cache in dir. It sweeps temp files a
// previous process left behind and refuses an index another process holds.
func Open(dir string) (*Store, error) { return OpenWith(dir, Options{}) }

// OpenWith is Open with options.
func OpenWith(dir string, opts Options) (*Store, error) {
	files := opts.Files
	if files == nil {
		d, err := OpenDirFiles(dir)
		if err != nil {
			return nil, err
		}
		files = d
	} else if err := mkdirSynced(dir); err != nil {
		return nil, fmt.Errorf("create cache dir: %w", err)
	}
	db, err := bolt.Open(filepath.Join(dir, "index.db"), 0o644, &bolt.Options{Timeout: time.Second})
	if err == nil {
		// bbolt syncs the file, not its name: a new index lost to a power
		// cut would take every upload with it.
		if err = syncDir(dir); err != nil {
			db.Close()
			return nil, fmt.Errorf("sync cache dir: %w", err)
		}
	}
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open index %s: %w", filepath.Join(dir, "index.db"), ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open index: %w", err)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	err = db.View(checkBuckets)
	if errors.Is(err, errNeedInit) {
		err = db.Update(func(tx *bolt.Tx) error { return initBuckets(tx, now()) })
	}
	var schema []byte
	if err == nil {
		err = db.View(func(tx *bolt.Tx) error {
			schema = tx.Bucket(bucketMeta).Get(keySchema)
			if tx.Bucket(bucketMeta).Get(keyMigrating) != nil {
				schema = []byte(schemaUpgraded) // an upgrade to finish
			}
			return checkSchema(schema)
		})
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	s := &Store{dir: dir, db: db, writes: &groupCommit{db: db}, files: files, shared: opts.Shared, hot: newHotNarInfos(hotNarInfoBytes), present: opts.Present, now: now, accessed: opts.Accessed}
	s.servedDays.tick(now())
	if err := s.loadNarInfoCount(); err != nil {
		db.Close()
		return nil, err
	}
	if err := s.resumeEvictions(); err != nil {
		db.Close()
		return nil, err
	}
	if string(schema) == schemaUpgraded {
		start := time.Now()
		if err = s.migrate(upgradeBatch); err == nil {
			s.upgraded = Upgrade{From: schemaUpgraded, To: schemaVersion, Took: time.Since(start)}
		}
	}
	if err == nil {
		err = s.loadNARTotals()
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	// After the count: indexing a file counts it.
	if err := s.resumeCommits(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// allBuckets are created at Open (uploads is created when first used).
var allBuckets = [][]byte{bucketNarInfo, bucketNARSource, bucketNAR, bucketNARAge, bucketAux, bucketMisses, bucketPins, bucketMeta, bucketEvicting, bucketCommitting, bucketServed}

// errNeedInit means the index lacks a bucket or its schema version.
var errNeedInit = errors.New("store: index needs its buckets")

// checkBuckets finds whether the index has everything, in a read
// transaction: opening an existing cache writes nothing (a write
// transaction ends in an fsync).
func checkBuckets(tx *bolt.Tx) error {
	for _, b := range allBuckets {
		if tx.Bucket(b) == nil {
			return errNeedInit
		}
	}
	meta := tx.Bucket(bucketMeta)
	if meta.Get(keySchema) == nil || meta.Get(keyServedSince) == nil || meta.Get(keyNarInfoCount) == nil {
		return errNeedInit
	}
	return nil
}

func checkSchema(v []byte) error {
	if string(v) != schemaVersion && string(v) != schemaUpgraded {
		return fmt.Errorf("%w: index has version %s, this binary reads %s (and upgrades %s)", ErrSchema, v, schemaVersion, schemaUpgraded)
	}
	return nil
}

func initBuckets(tx *bolt.Tx, now time.Time) error {
	for _, b := range allBuckets {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return fmt.Errorf("create bucket %s: %w", b, err)
		}
	}
	meta := tx.Bucket(bucketMeta)
	switch v := meta.Get(keySchema); {
	case v == nil:
		// A new index; one with NAR rows but no schema was written by
		// hand (the scale benchmarks), as schema 1 wrote its rows.
		schema := schemaVersion
		if k, _ := tx.Bucket(bucketNAR).Cursor().First(); k != nil {
			schema = schemaUpgraded
		} else if err := meta.Put(keyNARTotals, narTotals(0, 0)); err != nil {
			return err
		}
		if err := meta.Put(keySchema, []byte(schema)); err != nil {
			return err
		}
	default:
		if err := checkSchema(v); err != nil {
			return err
		}
	}
	// An index from before narinfos were stamped: they count as served
	// now (the upgrade), since a client may have got one just before.
	if err := initServed(tx, now); err != nil {
		return err
	}
	return countNarInfos(tx)
}

// Files are the NAR files themselves, for verify and repair: the index
// does not learn of what is done through them.
func (s *Store) Files() NARFiles { return s.files }

// Dir is the cache directory.
func (s *Store) Dir() string { return s.dir }

// Close flushes the NAR accesses and narinfo serving days recorded in
// memory and closes the index. Writers still open must be finished first.
func (s *Store) Close() error {
	ctx := context.Background()
	return errors.Join(s.FlushAccess(ctx), s.FlushServed(ctx), s.db.Close())
}
