package main

import (
	"bytes"
	"encoding/xml"
	"io/ioutil"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"
)

// soapCall holds the parts of a SOAP request this server looks at; XML
// names match without namespaces, absent elements stay zero.
type soapCall struct {
	Method      string
	This        string `xml:"_this"`
	Snapshot    string `xml:"snapshot"`
	DeviceKey   int32  `xml:"deviceKey"`
	StartOffset int64  `xml:"startOffset"`
	ChangeId    string `xml:"changeId"`
	Name        string `xml:"name"` // CreateSnapshot's
	Spec        struct {
		ChangeTrackingEnabled *bool `xml:"changeTrackingEnabled"`
	} `xml:"spec"`
}

type soapEnvelope struct {
	Body struct {
		Call struct {
			XMLName xml.Name
			soapCall
		} `xml:",any"`
	} `xml:"Body"`
}

func parseCall(body []byte) (*soapCall, bool) {
	var env soapEnvelope
	if err := xml.Unmarshal(body, &env); err != nil || env.Body.Call.XMLName.Local == "" {
		return nil, false
	}
	call := env.Body.Call.soapCall
	call.Method = env.Body.Call.XMLName.Local
	return &call, true
}

// ServeHTTP sits in front of the simulator: it counts and delays every
// SOAP call, keeps the disks' changeIds current, and adds change tracking.
func (b *Bed) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/vddkpy/") {
		b.serveControl(w, r)
		return
	}
	if r.Method != http.MethodPost || r.URL.Path != "/sdk" {
		b.inner.ServeHTTP(w, r)
		return
	}
	body, err := ioutil.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.Body = ioutil.NopCloser(bytes.NewReader(body))
	call, ok := parseCall(body)
	if !ok {
		b.inner.ServeHTTP(w, r)
		return
	}
	// The server's own client (snapshot tasks) is neither counted nor slowed.
	var delay time.Duration
	if r.Header.Get("User-Agent") != internalAgent {
		delay = b.called(call.Method)
	}
	if call.Method == "QueryChangedDiskAreas" && delay > 0 {
		b.answerWithin(w, r, call, time.Now().Add(delay))
		return
	}
	time.Sleep(delay)
	b.dispatch(w, r, call)
}

// answerWithin works the answer out at once and sends it when the call's
// modelled time is over: a real server's work is part of the latency
// measured on it, and the bed's CPU time is not vSphere's (control.go).
// Only for QueryChangedDiskAreas, which changes nothing: the bed's one
// call with much to compute (thousands of areas a page).
func (b *Bed) answerWithin(w http.ResponseWriter, r *http.Request,
	call *soapCall, deadline time.Time) {
	answer := httptest.NewRecorder()
	b.dispatch(answer, r, call)
	time.Sleep(time.Until(deadline))
	for key, values := range answer.Header() {
		w.Header()[key] = values
	}
	w.WriteHeader(answer.Code)
	w.Write(answer.Body.Bytes())
}

func (b *Bed) dispatch(w http.ResponseWriter, r *http.Request, call *soapCall) {
	b.refreshChangeIDs()
	switch call.Method {
	case "QueryChangedDiskAreas":
		if !b.hostileQuery(w, r, call) {
			b.queryChangedDiskAreas(w, r, call)
		}
	case "CreateSnapshot_Task", "CreateSnapshotEx_Task":
		b.createSnapshot(w, r, call)
	case "RemoveSnapshot_Task":
		b.removeSnapshot(w, r, keepDiskFiles(b.vm, call.This))
	case "RemoveAllSnapshots_Task":
		b.removeSnapshot(w, r, keepDiskFiles(b.vm, ""))
	case "Fetch":
		b.fetch(w, r)
	case "PowerOnVM_Task", "PowerOffVM_Task":
		b.powerTask(w, r)
	case "ReconfigVM_Task":
		b.beforeReconfigure(call)
		b.inner.ServeHTTP(w, r)
	default:
		b.inner.ServeHTTP(w, r)
	}
}
