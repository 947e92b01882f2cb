package main

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vim25/mo"
)

// knobs are what tests change while the server runs.
type knobs struct {
	// SOAP method -> added delay per call (for QueryChangedDiskAreas the
	// call's whole time: its answer is worked out within it).
	latency map[string]time.Duration
	// QueryChangedDiskAreas paging: at most pageAreas areas per answer
	// (the real server's cap), each answer covering at most pageBytes of
	// the disk (0: no limit), so an answer may hold no area at all and
	// still not reach the end of the disk.
	pageAreas int
	pageBytes int64
	hostile   *hostileAnswer // hostile.go
}

// The real server's cap on areas per QueryChangedDiskAreas answer, as the
// tools that page through it report it (CDI's 2000-area bug).
const defaultPageAreas = 2000

func (k *knobs) reset() {
	*k = knobs{latency: map[string]time.Duration{}, pageAreas: defaultPageAreas}
}

// controlRequest is the body of POST /vddkpy/control; absent fields are
// left as they are.
type controlRequest struct {
	Latency   map[string]float64 `json:"latency"` // method -> seconds
	PageAreas *int               `json:"page_areas"`
	PageBytes *int64             `json:"page_bytes"`
	Reset     bool               `json:"reset"` // knobs back to defaults, counters to 0
	// End every client session (the server's own excepted), as a vCenter
	// does when sessions expire: their next call is NotAuthenticated.
	ExpireSessions bool           `json:"expire_sessions"`
	Hostile        *hostileAnswer `json:"hostile"`
	Grow           *growRequest   `json:"grow"` // extend a disk (lifecycle.go)
}

// serveControl: POST /vddkpy/control changes the knobs; GET
// /vddkpy/calls returns the per-method call counts.
func (b *Bed) serveControl(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/vddkpy/control" && r.Method == http.MethodPost:
		var req controlRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		b.control(&req)
		if req.Grow != nil {
			if err := b.grow(req.Grow); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
		}
		if req.ExpireSessions {
			if err := b.expireSessions(); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
		}
		w.WriteHeader(http.StatusNoContent)
	case r.URL.Path == "/vddkpy/calls" && r.Method == http.MethodGet:
		b.mu.Lock()
		data, _ := json.Marshal(b.calls)
		b.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(data)
	default:
		http.NotFound(w, r)
	}
}

func (b *Bed) control(req *controlRequest) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if req.Reset {
		b.knobs.reset()
		b.calls = map[string]int{}
	}
	for method, seconds := range req.Latency {
		b.knobs.latency[method] = time.Duration(seconds * float64(time.Second))
	}
	if req.PageAreas != nil {
		b.knobs.pageAreas = *req.PageAreas
	}
	if req.PageBytes != nil {
		b.knobs.pageBytes = *req.PageBytes
	}
	if req.Hostile != nil {
		b.knobs.hostile = req.Hostile
	}
}

// called counts one call of method and returns the delay to add to it.
func (b *Bed) called(method string) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls[method]++
	return b.knobs.latency[method]
}

func (b *Bed) expireSessions() error {
	ctx := context.Background()
	var m mo.SessionManager
	err := property.DefaultCollector(b.client.Client).RetrieveOne(ctx,
		*b.client.ServiceContent.SessionManager,
		[]string{"sessionList", "currentSession"}, &m)
	if err != nil {
		return err
	}
	var others []string
	for _, s := range m.SessionList {
		if m.CurrentSession == nil || s.Key != m.CurrentSession.Key {
			others = append(others, s.Key)
		}
	}
	if len(others) == 0 {
		return nil
	}
	return b.client.SessionManager.TerminateSession(ctx, others)
}
