package metrics

// RawInput is one raw input row that a release's monitor function turns
// into the record's features on the writer goroutine, not on the
// inference path (see agent/monitor.go). Data is a copy the record owns;
// nil when the input was not carried (over the size or memory limit), in
// which case every feature is missing.
type RawInput struct {
	Data []byte
	Fn   FeatureFunc
}

// FeatureFunc computes a release's monitored features from a raw input
// row. The writer calls Features once for every record it takes, and
// Discard for a record the queue refused, so that the caller may account
// for the bytes it copied.
type FeatureFunc interface {
	// Features returns the features of row in the baseline's order, with
	// missing marking those not computed. With a nil row, or when the
	// function fails, every feature is missing and err says why.
	Features(row []byte) (f []float64, missing []bool, err error)
	// Discard releases a row that is never computed.
	Discard(row []byte)
}

// derive computes the features of the batch's records that carry a raw
// input, counting the rows not carried and the failures.
func (b *Buffer) derive(batch []Record) {
	for i := range batch {
		r := &batch[i]
		raw := r.Raw
		if raw == nil {
			continue
		}
		r.Raw = nil
		var err error
		r.Features, r.Missing, err = raw.Fn.Features(raw.Data)
		switch {
		case raw.Data == nil:
			b.rawDropped.Add(1)
		case err != nil:
			b.monitorFailed.Add(1)
		}
	}
}
