package metrics

import (
	"sync"
	"sync/atomic"
)

// chunkLen is the entries in one chunk of the record queue: 512 × 176
// bytes, 88 KiB.
const chunkLen = 512

// spareChunks is how many emptied chunks the queue keeps for reuse; the
// rest go back to the garbage collector.
const spareChunks = 4

type chunk struct {
	n int
	e [chunkLen]entry
}

// queue is the hot path's record queue: a list of chunks allocated as it
// fills, so that an idle agent holds none of it and a busy one only what
// is queued (a channel of the full bound would be allocated, 11 MB at the
// default 65,536, at start and become resident as traffic cycled through
// it). It bounds the records queued, not the Sync markers. The writer takes
// everything queued at once.
type queue struct {
	mu      sync.Mutex
	chunks  []*chunk
	spare   []*chunk
	records int // records queued
	// full mirrors records ≥ limit, for a drop without the lock.
	full    atomic.Bool
	entries int // records and markers queued
	syncs   int // markers queued
	limit   int
	closed  bool
	// wake has one slot: a push that finds the queue empty fills it.
	wake chan struct{}
}

func newQueue(limit int) *queue {
	return &queue{limit: limit, wake: make(chan struct{}, 1)}
}

// push appends e; it refuses a record when limit records are queued, and
// anything once the queue is closed.
func (q *queue) push(e entry) bool {
	if e.sync == nil && q.full.Load() {
		return false
	}
	q.mu.Lock()
	if q.closed || (e.sync == nil && q.records >= q.limit) {
		q.mu.Unlock()
		return false
	}
	var c *chunk
	if k := len(q.chunks); k > 0 && q.chunks[k-1].n < chunkLen {
		c = q.chunks[k-1]
	} else {
		if k := len(q.spare); k > 0 {
			c = q.spare[k-1]
			q.spare = q.spare[:k-1]
		} else {
			c = new(chunk)
		}
		q.chunks = append(q.chunks, c)
	}
	c.e[c.n] = e
	c.n++
	if e.sync != nil {
		q.syncs++
	} else if q.records++; q.records == q.limit {
		q.full.Store(true)
	}
	first := q.entries == 0
	q.entries++
	q.mu.Unlock()
	if first {
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
	return true
}

// lingerable says the writer may wait for more: fewer than n records and
// no Sync marker queued.
func (q *queue) lingerable(n int) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.syncs == 0 && q.records < n
}

// take hands the writer everything queued, appending the chunks to dst.
// The writer gives them back with recycle.
func (q *queue) take(dst []*chunk) []*chunk {
	q.mu.Lock()
	dst = append(dst, q.chunks...)
	clear(q.chunks)
	q.chunks = q.chunks[:0]
	q.records, q.entries, q.syncs = 0, 0, 0
	q.full.Store(false)
	q.mu.Unlock()
	return dst
}

// recycle keeps up to spareChunks emptied chunks for reuse.
func (q *queue) recycle(cs []*chunk) {
	for _, c := range cs {
		clear(c.e[:c.n]) // drop the records' references
		c.n = 0
	}
	q.mu.Lock()
	for _, c := range cs {
		if len(q.spare) == spareChunks {
			break
		}
		q.spare = append(q.spare, c)
	}
	q.mu.Unlock()
}

// close refuses every later push.
func (q *queue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
}
