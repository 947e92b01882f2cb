package main

// Hostile answers to QueryChangedDiskAreas, for the tests of a client that
// must not trust them: an answer shifted from the offset asked for, raw
// bytes of any status (a malformed document, an HTML page, a redirect), a
// huge answer, or none at all (the server stalls).

import (
	"bufio"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// hostileAnswer is the "hostile" field of POST /vddkpy/control.
type hostileAnswer struct {
	// "shift": answer as if asked Shift bytes later (the startOffset
	// answered is then not the one asked for); "raw": Status, ContentType,
	// Location and Body ("{offset}" replaced by the offset asked for);
	// "areas": Count areas of Length bytes every Stride bytes from the
	// offset asked for, the answer covering the rest of the disk; "stall":
	// no answer until the client goes.
	Kind        string `json:"kind"`
	Shift       int64  `json:"shift"`
	Status      int    `json:"status"`
	ContentType string `json:"content_type"`
	Location    string `json:"location"`
	Body        string `json:"body"`
	Count       int    `json:"count"`
	Stride      int64  `json:"stride"`
	Length      int64  `json:"length"`
	// Calls it applies to from now on (0: every one); "after" calls are
	// answered normally first.
	Calls int `json:"calls"`
	After int `json:"after"`
}

// takeHostile returns the hostile answer for this call, if any, counting it.
func (b *Bed) takeHostile() *hostileAnswer {
	b.mu.Lock()
	defer b.mu.Unlock()
	h := b.knobs.hostile
	if h == nil {
		return nil
	}
	if h.After > 0 {
		h.After--
		return nil
	}
	if h.Calls > 0 {
		h.Calls--
		if h.Calls == 0 {
			b.knobs.hostile = nil
		}
	}
	copied := *h
	return &copied
}

// hostileQuery answers call with a hostile answer if one is set; false
// when the call is to be answered normally.
func (b *Bed) hostileQuery(w http.ResponseWriter, r *http.Request, call *soapCall) bool {
	h := b.takeHostile()
	if h == nil {
		return false
	}
	switch h.Kind {
	case "shift":
		shifted := *call
		shifted.StartOffset += h.Shift
		b.queryChangedDiskAreas(w, r, &shifted)
	case "raw":
		body := strings.ReplaceAll(h.Body, "{offset}", strconv.FormatInt(call.StartOffset, 10))
		if h.ContentType != "" {
			w.Header().Set("Content-Type", h.ContentType)
		}
		if h.Location != "" {
			w.Header().Set("Location", h.Location)
		}
		w.WriteHeader(h.Status)
		_, _ = w.Write([]byte(body))
	case "areas":
		d := b.diskByKey(call.DeviceKey)
		var capacity int64
		if d != nil {
			capacity = d.capacity
		}
		w.Header().Set("Content-Type", "text/xml; charset=utf-8")
		out := bufio.NewWriterSize(w, 1<<16)
		fmt.Fprint(out, envelopeHead)
		fmt.Fprintf(out, `<QueryChangedDiskAreasResponse xmlns="urn:vim25"><returnval><startOffset>%d</startOffset><length>%d</length>`,
			call.StartOffset, capacity-call.StartOffset)
		for i := 0; i < h.Count; i++ {
			fmt.Fprintf(out, "<changedArea><start>%d</start><length>%d</length></changedArea>",
				call.StartOffset+int64(i)*h.Stride, h.Length)
		}
		fmt.Fprint(out, "</returnval></QueryChangedDiskAreasResponse>", envelopeTail)
		_ = out.Flush()
	case "stall":
		<-r.Context().Done()
	default:
		http.Error(w, "unknown hostile kind "+h.Kind, http.StatusBadRequest)
	}
	return true
}
