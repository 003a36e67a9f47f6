package broker

import "sync/atomic"

// Stats are the broker's counters since New.
type Stats struct {
	Clients           int64  // authenticated connections now
	Connects          uint64 // CONNECTs accepted
	RefusedConnects   uint64 // CONNECTs refused (bad credentials, client ID, will, session owner)
	RefusedWills      uint64 // of RefusedConnects: will topic not permitted
	RefusedPublishes  uint64 // PUBLISHes the Authorizer (or a $-topic) refused
	RefusedSubscribes uint64 // SUBSCRIBE filters refused
	Shed              uint64 // connections closed at accept: MaxPending reached
	Kicked            uint64 // connections dropped by Disconnect
	Dropped           uint64 // messages dropped: the receiving client's queue was full (MaxQueued)
}

type counters struct {
	connects, refusedConnects, refusedWills atomic.Uint64
	refusedPublishes, refusedSubscribes     atomic.Uint64
	shed, kicked                            atomic.Uint64
}

// Stats returns the current counters.
func (e *Embedded) Stats() Stats {
	return Stats{
		Clients:           atomic.LoadInt64(&e.server.Info.ClientsConnected),
		Connects:          e.stats.connects.Load(),
		RefusedConnects:   e.stats.refusedConnects.Load(),
		RefusedWills:      e.stats.refusedWills.Load(),
		RefusedPublishes:  e.stats.refusedPublishes.Load(),
		RefusedSubscribes: e.stats.refusedSubscribes.Load(),
		Shed:              e.stats.shed.Load(),
		Kicked:            e.stats.kicked.Load(),
		Dropped:           uint64(atomic.LoadInt64(&e.server.Info.MessagesDropped)),
	}
}
