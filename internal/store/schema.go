package store

// This file documents the index (index.db, a bbolt file) and the NAR
// files beside it. It starts with what the fill path writes and the rule
// that keeps index and files consistent across a power cut; the full list
// of buckets and keys is to join it (issue #23).
//
// # Buckets the fill path writes
//
//	narinfo     <hash part> → narinfo text as fetched or uploaded.
//	            Written by indexNarInfo (PutNarInfo) and claimUpload, with
//	            meta's narinfo-count in the same transaction when the key
//	            is new.
//	served      <hash part> → the day it was last served; the narinfo's
//	            transaction sets it to today.
//	narsrc      <NAR name> → NARSource (JSON): where the NAR comes from,
//	            to refill it. Same transaction as the narinfo naming it.
//	committing  <NAR name> → nothing: the NAR file is about to be renamed
//	            into nar/<xx>/ (markCommitting). Deleted in the
//	            transaction that writes its nar row; Open finishes
//	            (resumeCommits) what a crash left.
//	nar         <NAR name> → narRow: a NAR file that is on disk, whole,
//	            checked and durable. With narage (its order of last use)
//	            and meta's nar-totals, changed in the same transaction as
//	            every nar row change (narRows; see narage.go).
//	evicting    batch records of NAR names whose rows eviction deleted
//	            and whose files are still to be removed (evictrecord.go).
//
// # Durability
//
// The rule: no index row may name bytes a power cut can take away; a
// power cut may take away rows whose bytes are still there, as long as
// what is left can be refilled or is found again at Open. In detail:
//
//   - A nar row is written only after its file's bytes (fsync), its name
//     (rename, then fsync of the nar/<xx> directory) and the directory's
//     own name (nar/ synced once per shard and process, shardReady) are
//     durable. The cache dir, nar/, tmp/, partial/ and index.db's name are
//     synced at Open (mkdirSynced).
//   - Between the rename and the row, the committing record (durable
//     before the rename) says which file to index at the next Open.
//   - Eviction deletes rows first (with an evicting record), then the
//     files; the record is dropped only after the removals are durable
//     (their nar/<xx> directories synced, SyncRemoved): a record dropped
//     before would leave, after a power cut, files nothing names.
//   - A write transaction is durable when it returns (bbolt fdatasyncs
//     the file; the meta page switch makes it atomic). The fill path's
//     writes (indexNarInfo, markCommitting, indexNAR, PutAux) go through
//     groupCommit: concurrent writers share one transaction and each
//     returns only once that is committed, so sharing changes what the
//     syncs cost, not what is durable when a caller goes on.
//   - What a client waits for: a narinfo fetched from an upstream is
//     answered once its transaction (narinfo, served, narsrc) is
//     committed, so the NAR request that follows finds its source. A NAR
//     is answered to its last byte once every byte is in and checked
//     against the narinfo (the flight's verified state), before the file
//     is synced, renamed and indexed: a power cut then loses only the
//     cached copy, and the narinfo's source refills it. Until the row is
//     in, who asks for the NAR streams it from the part file.
//   - An upload has no source to refill from: its NAR and narinfo are
//     acknowledged only after their rows are committed.
//   - Lost by design on a power cut: access times and served days not yet
//     flushed, the miss log's last second, downloads in flight (partial
//     files resume from their last durable note, which SaveNote syncs
//     with its name).
//
// TestPowerCut (cmd/proxy) checks all of this on a file system that drops
// what was not synced (internal/powercuttest).
