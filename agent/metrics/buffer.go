package metrics

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// FileName is the buffer's database file in the agent's data folder; it is
// separate from the agent's state database.
const FileName = "metrics.db"

// pragmas are in the DSN so that every connection gets them: WAL, NORMAL
// synchronous (durable across a process crash; a power cut may lose the
// last commits, which WAL keeps consistent), and IMMEDIATE transactions.
const pragmas = "_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)" +
	"&_pragma=synchronous(NORMAL)&_txlock=immediate"

const schema = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- Runs of records (see run.go): one row per run of one model's records in
-- one window.
CREATE TABLE IF NOT EXISTS runs (
	id        INTEGER PRIMARY KEY,
	model     TEXT NOT NULL,
	release   INTEGER NOT NULL,
	version   TEXT NOT NULL,
	slot      TEXT NOT NULL,
	window_ms INTEGER NOT NULL, -- the start of the window the records are in
	min_at_ms INTEGER NOT NULL,
	max_at_ms INTEGER NOT NULL,
	n         INTEGER NOT NULL, -- records in data
	data      BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_model ON runs (model, max_at_ms);
CREATE TABLE IF NOT EXISTS outbox (
	seq      INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused: the Telemetry sequence
	start_ms INTEGER NOT NULL,
	end_ms   INTEGER NOT NULL,
	payload  BLOB NOT NULL,                     -- a flotilla.v1.Summaries
	sent_ms  INTEGER NOT NULL DEFAULT 0         -- 0: never sent, so it may still be coarsened
);
`

// Options configure a Buffer. Zero values take the defaults.
type Options struct {
	Now       func() time.Time // the clock; time.Now by default
	QueueSize int              // records the hot path may queue; 65536 (memory taken as it fills)
	BatchSize int              // records per write transaction; 1000
	// Linger is how long the writer lets a short batch fill before
	// writing it (a Sync cuts it short); 50 ms; negative: never.
	Linger      time.Duration
	QuotaBytes  int64         // database size limit; 64 MiB
	Window      time.Duration // summary window; 60 s
	MaxCarry    int           // windows a small window is carried forward at most; 10
	Baselines   Baselines     // drift baselines by model and release; nil: none
	Counters    CounterSource // lifecycle counters per window; nil: none
	MaxInFlight int           // unacknowledged messages in flight; 16
	AckTimeout  time.Duration // resend an unacknowledged message after; 30 s
	// MessagesPerSecond paces the drain; 20.
	MessagesPerSecond float64
	// BudgetBytesPerDay limits telemetry bytes on a metered link; 0: none.
	BudgetBytesPerDay int64
	// SummariesPerMessage caps how many summaries one message carries,
	// after coarsening; 64.
	SummariesPerMessage int
}

func (o *Options) defaults() {
	if o.Now == nil {
		o.Now = time.Now
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.QueueSize, 1<<16)
	def(&o.BatchSize, 1000)
	if o.Linger == 0 {
		o.Linger = 50 * time.Millisecond
	}
	def(&o.MaxCarry, 10)
	def(&o.MaxInFlight, 16)
	def(&o.SummariesPerMessage, 64)
	if o.QuotaBytes <= 0 {
		o.QuotaBytes = 64 << 20
	}
	if o.Window <= 0 {
		o.Window = time.Minute
	}
	if o.AckTimeout <= 0 {
		o.AckTimeout = 30 * time.Second
	}
	if o.MessagesPerSecond <= 0 {
		o.MessagesPerSecond = 20
	}
}

// Stats are the buffer's counters since it opened (Pending and Records are
// current).
type Stats struct {
	Buffered          uint64 // records written
	Dropped           uint64 // records refused because the queue was full
	Lost              uint64 // records that could not be written (disk full, I/O error)
	Damaged           uint64 // records in a damaged row of the database, left out of their summary
	EvictedRecords    uint64 // unsummarised records evicted for the quota
	EvictedSummaries  uint64 // outbox messages evicted for the quota
	Coarsened         uint64 // outbox messages merged into their neighbours
	Summaries         uint64 // summaries produced
	RawDropped        uint64 // records whose raw input was not carried (size or memory limit): features missing
	MonitorFailed     uint64 // records the monitor function failed on: features missing
	Sent, Acked       uint64 // messages published and acknowledged
	Records, Pending  int64  // rows in records and in the outbox now
	DatabaseBytes     int64  // pages in use × page size
	LastWriteError    string
	LastWriteErrorAt  time.Time
	OldestPendingFrom time.Time // start of the oldest unacknowledged window
}

// Buffer is the record buffer and outbox. Record is safe for concurrent use
// and never blocks; the other methods serialise on the database.
type Buffer struct {
	db    *sql.DB
	opt   Options
	epoch string
	q     *queue
	done  chan struct{} // closed by Close: the writer drains the queue and stops
	// flushNow cuts the writer's linger short: a Sync is queued.
	flushNow chan struct{}
	stopped  chan struct{} // closed by the writer when it has stopped
	close    sync.Once

	pageSize int64
	runStmt  *sql.Stmt // the INSERT of one run, prepared once
	batches  uint64    // written by the writer goroutine only
	pack     packer    // the writer's

	buffered, dropped, lost, damaged, evictedRecords, evictedSummaries atomic.Uint64
	coarsened, summaries, sent, acked, rawDropped, monitorFailed       atomic.Uint64
	errMu                                                              sync.Mutex
	lastErr                                                            string
	lastErrAt                                                          time.Time

	mu     sync.Mutex // the outbox's drain state
	device string
	bucket tokenBucket
	budget tokenBucket
}

var _ Recorder = (*Buffer)(nil)

// Open opens (creating if needed) the buffer in the data folder dir and
// starts its writer. Close stops it.
func Open(ctx context.Context, dir string, opt Options) (*Buffer, error) {
	opt.defaults()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	path := filepath.Join(dir, FileName)
	return open(ctx, path, "file:"+path+"?"+pragmas, opt)
}

// OpenMemory opens a buffer held in memory, for agent/sim only: the same
// schema, writer, windows, outbox and acknowledgements as Open, within the
// same quota, but nothing survives Close and no file is held open.
func OpenMemory(ctx context.Context, opt Options) (*Buffer, error) {
	opt.defaults()
	// A private in-memory database per connection: the pool below keeps
	// exactly one, forever.
	return open(ctx, "memory", "file::memory:?"+pragmas, opt)
}

func open(ctx context.Context, path, dsn string, opt Options) (*Buffer, error) {
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("metrics: open %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxIdleTime(0)
	db.SetConnMaxLifetime(0)
	b := &Buffer{db: db, opt: opt, pack: packer{window: opt.Window.Milliseconds()}, q: newQueue(opt.QueueSize), done: make(chan struct{}),
		stopped: make(chan struct{}), flushNow: make(chan struct{}, 1)}
	if err := b.init(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("metrics: open %s: %w", path, err)
	}
	now := opt.Now()
	b.bucket = newBucket(opt.MessagesPerSecond, max(1, opt.MessagesPerSecond), now)
	if opt.BudgetBytesPerDay > 0 {
		perSec := float64(opt.BudgetBytesPerDay) / 86400
		b.budget = newBucket(perSec, float64(opt.BudgetBytesPerDay)/24, now)
	}
	go b.writer()
	return b, nil
}

func (b *Buffer) init(ctx context.Context) error {
	if _, err := b.db.ExecContext(ctx, schema); err != nil {
		return err
	}
	if err := b.db.QueryRowContext(ctx, `PRAGMA page_size`).Scan(&b.pageSize); err != nil {
		return err
	}
	// The quota is SQLite's own page limit: past it a write fails with
	// SQLITE_FULL, which the writer answers by evicting.
	if _, err := b.db.ExecContext(ctx, fmt.Sprintf(`PRAGMA max_page_count = %d`, max(16, b.opt.QuotaBytes/b.pageSize))); err != nil {
		return err
	}
	var err error
	if b.runStmt, err = b.db.PrepareContext(ctx, insertRunSQL); err != nil {
		return err
	}
	if err := b.migrateRecords(ctx); err != nil {
		return err
	}
	err = b.db.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'epoch'`).Scan(&b.epoch)
	if errors.Is(err, sql.ErrNoRows) {
		var r [8]byte
		_, _ = rand.Read(r[:])
		b.epoch = hex.EncodeToString(r[:])
		_, err = b.db.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES ('epoch', ?)`, b.epoch)
	}
	return err
}

// Epoch names this database: it changes when the file is re-created, so the
// control plane does not take restarted sequences for duplicates.
func (b *Buffer) Epoch() string { return b.epoch }

// Record enqueues r for the writer. It never blocks: when the queue is full
// the record is dropped and counted.
func (b *Buffer) Record(r Record) {
	if !b.q.push(entry{rec: r}) {
		b.dropped.Add(1)
		if r.Raw != nil {
			r.Raw.Fn.Discard(r.Raw.Data)
		}
	}
}

// Close writes what is queued and closes the database.
func (b *Buffer) Close() error {
	b.close.Do(func() {
		b.q.close()
		close(b.done)
	})
	<-b.stopped
	if b.runStmt != nil {
		b.runStmt.Close()
	}
	return b.db.Close()
}

// ErrClosed is returned by Sync (and so CloseWindows) once Close has been
// called.
var ErrClosed = errors.New("metrics: closed")

// Sync waits until every record queued before the call is written. The
// windowing calls it; its marker is queued even when the queue is full of
// records.
func (b *Buffer) Sync(ctx context.Context) error {
	done := make(chan struct{})
	if !b.q.push(entry{sync: done}) {
		return ErrClosed
	}
	select {
	case b.flushNow <- struct{}{}:
	default: // a kick is already pending
	}
	// A marker queued before Close is taken by the writer's last drain;
	// stopped is a backstop.
	select {
	case <-done:
		return nil
	case <-b.stopped:
		select {
		case <-done: // taken and closed before the writer stopped
			return nil
		default:
			return ErrClosed
		}
	case <-ctx.Done():
		return ctx.Err()
	}
}

// entry is a record, or a Sync marker.
type entry struct {
	rec  Record
	sync chan struct{}
}

func (b *Buffer) writer() {
	defer close(b.stopped)
	batch := make([]Record, 0, b.opt.BatchSize)
	var syncs []chan struct{}
	var taken []*chunk
	// drain writes everything queued now, in batches of BatchSize rows,
	// then releases the Syncs it passed.
	drain := func() {
		taken = b.q.take(taken[:0])
		for _, c := range taken {
			for i := range c.n {
				e := &c.e[i]
				if e.sync != nil {
					syncs = append(syncs, e.sync)
					continue
				}
				batch = append(batch, e.rec)
				if len(batch) == b.opt.BatchSize {
					b.write(batch)
					clear(batch)
					batch = batch[:0]
				}
			}
		}
		if len(batch) > 0 {
			b.write(batch)
			clear(batch)
			batch = batch[:0]
		}
		b.q.recycle(taken)
		clear(taken)
		for _, c := range syncs {
			close(c)
		}
		clear(syncs)
		syncs = syncs[:0]
	}
	for {
		select {
		case <-b.q.wake:
			// While the batch is short and no Sync waits, let records
			// gather for Linger — asleep, not taking them one by one (a
			// wake-up per record costs every inference) — then take what
			// is queued and write: one transaction per batch of up to
			// BatchSize rows, rather than one per handful of records (a
			// commit costs about as much as hundreds of rows). A Sync cuts
			// the wait short.
			if b.opt.Linger > 0 && b.q.lingerable(b.opt.BatchSize) {
				t := time.NewTimer(b.opt.Linger)
				select {
				case <-t.C:
				case <-b.flushNow:
				case <-b.done:
				}
				t.Stop()
			}
			drain()
		case <-b.done:
			drain() // the queue is closed: this is the last of it
			return
		}
	}
}

// write stores one batch; on SQLITE_FULL it evicts and tries once more,
// then counts the batch as lost.
func (b *Buffer) write(batch []Record) {
	ctx := context.Background()
	b.derive(batch)
	err := b.insert(ctx, batch)
	if isFull(err) {
		if _, e := b.enforceQuota(ctx, int64(len(batch))*256); e == nil {
			err = b.insert(ctx, batch)
		}
	}
	if err != nil {
		b.lost.Add(uint64(len(batch)))
		b.errMu.Lock()
		b.lastErr, b.lastErrAt = err.Error(), b.opt.Now()
		b.errMu.Unlock()
		return
	}
	b.buffered.Add(uint64(len(batch)))
	if b.batches++; b.batches%16 == 0 {
		_, _ = b.enforceQuota(ctx, 0)
	}
}

const insertRunSQL = `INSERT INTO runs (model, release, version, slot, window_ms, min_at_ms, max_at_ms, n, data)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`

// insert writes the batch as runs, in one transaction: a run is written
// whole or not at all.
func (b *Buffer) insert(ctx context.Context, batch []Record) error {
	p := &b.pack
	p.reset()
	for i := range batch {
		p.add(&batch[i])
	}
	defer p.reset()
	tx, err := b.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	stmt := tx.StmtContext(ctx, b.runStmt)
	for _, ru := range p.runs[:p.open] {
		k := &ru.key
		// The driver is done with the arguments when Exec returns: the
		// packer's buffers are reused for the next batch.
		if _, err := stmt.ExecContext(ctx, k.model, int64(k.release), k.version, k.slot, k.window,
			ru.minAt, ru.maxAt, ru.n, ru.data); err != nil {
			return err
		}
	}
	return tx.Commit()
}

func isFull(err error) bool {
	var e *sqlite.Error
	return errors.As(err, &e) && (e.Code()&0xff) == sqlite3.SQLITE_FULL
}

// usedBytes is the database's size in pages in use.
func (b *Buffer) usedBytes(ctx context.Context) (int64, error) {
	var pages, free int64
	if err := b.db.QueryRowContext(ctx, `PRAGMA page_count`).Scan(&pages); err != nil {
		return 0, err
	}
	if err := b.db.QueryRowContext(ctx, `PRAGMA freelist_count`).Scan(&free); err != nil {
		return 0, err
	}
	return (pages - free) * b.pageSize, nil
}

// Stats returns the buffer's counters.
func (b *Buffer) Stats(ctx context.Context) (Stats, error) {
	s := Stats{
		Buffered: b.buffered.Load(), Dropped: b.dropped.Load(), Lost: b.lost.Load(), Damaged: b.damaged.Load(),
		EvictedRecords: b.evictedRecords.Load(), EvictedSummaries: b.evictedSummaries.Load(),
		Coarsened: b.coarsened.Load(), Summaries: b.summaries.Load(), Sent: b.sent.Load(), Acked: b.acked.Load(),
		RawDropped: b.rawDropped.Load(), MonitorFailed: b.monitorFailed.Load(),
	}
	b.errMu.Lock()
	s.LastWriteError, s.LastWriteErrorAt = b.lastErr, b.lastErrAt
	b.errMu.Unlock()
	var oldest sql.NullInt64
	if err := b.db.QueryRowContext(ctx, `SELECT (SELECT COALESCE(SUM(n), 0) FROM runs), (SELECT COUNT(*) FROM outbox),
		(SELECT MIN(start_ms) FROM outbox)`).Scan(&s.Records, &s.Pending, &oldest); err != nil {
		return s, err
	}
	if oldest.Valid {
		s.OldestPendingFrom = time.UnixMilli(oldest.Int64)
	}
	var err error
	s.DatabaseBytes, err = b.usedBytes(ctx)
	return s, err
}

// CounterSource gives the lifecycle's per-model counters accumulated since
// its previous call for the same model and release.
type CounterSource interface {
	Take(model string, release uint64) *pb.ModelCounters
}
