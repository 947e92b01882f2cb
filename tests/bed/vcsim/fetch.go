package main

// Fetch reads one property of one object; pyvmomi 8 reads every property
// with it (pyvmomi 6 and 7 with RetrievePropertiesEx).  The simulator
// answers it by indexing the missing-property list of its own
// RetrievePropertiesEx result, which is empty for a property that is unset
// (a VM's snapshot before the first one, a task's error while it runs):
// it panics and the client sees the connection closed.  vSphere answers
// such a Fetch with no value, as this does.

import (
	"log"
	"net/http"
	"net/http/httptest"
)

func (b *Bed) fetch(w http.ResponseWriter, r *http.Request) {
	rec := httptest.NewRecorder()
	if servedWithoutPanic(b.inner, rec, r) {
		copyRecorded(w, rec)
		return
	}
	writeEnvelope(w, http.StatusOK, `<FetchResponse xmlns="urn:vim25"></FetchResponse>`)
}

// servedWithoutPanic: whether h served r without panicking (the simulator
// releases its locks with defer, so it stays usable after one).
func servedWithoutPanic(h http.Handler, w http.ResponseWriter, r *http.Request) (served bool) {
	defer func() {
		if p := recover(); p != nil {
			log.Printf("vcsim: the simulator panicked on a Fetch (%v): answered with no value", p)
			served = false
		}
	}()
	h.ServeHTTP(w, r)
	return true
}
