package main

// SOAP answers written here rather than by the simulator: the
// QueryChangedDiskAreas result and the vSphere faults it gives.

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"net/http"
	"strconv"
)

const envelopeHead = `<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenc="http://schemas.xmlsoap.org/soap/encoding/" xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<soapenv:Body>`
const envelopeTail = "</soapenv:Body>\n</soapenv:Envelope>\n"

func escape(s string) string {
	var b bytes.Buffer
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

func writeEnvelope(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(status)
	fmt.Fprint(w, envelopeHead, body, envelopeTail)
}

// vimFault is a vSphere fault: its type, vSphere's message and the
// fault's fields as XML.
type vimFault struct {
	kind    string
	message string
	fields  string
}

func invalidArgument(property string) *vimFault {
	return &vimFault{"InvalidArgument",
		"A specified parameter was not correct: " + property,
		"<invalidProperty>" + escape(property) + "</invalidProperty>"}
}

// fileFault; messageKey, if any, is ESXi's key for the cause (the
// fault's faultMessage).
func fileFault(file, messageKey string) *vimFault {
	fields := "<file>" + escape(file) + "</file>"
	if messageKey != "" {
		fields = "<faultMessage><key>" + escape(messageKey) + "</key></faultMessage>" + fields
	}
	return &vimFault{"FileFault", "Error caused by file " + file, fields}
}

// ESXi's key for "this disk's changes are not tracked" (hostd's CBT
// messages, as vSphere clients match them).
const cbtNotTracked = "vim.hostd.vmsvc.cbt.noTrack"

func objectNotFound(kind, vimType, value string) *vimFault {
	return &vimFault{"ManagedObjectNotFound",
		fmt.Sprintf("The object 'vim.%s:%s' has already been deleted or has not been completely created", vimType, value),
		fmt.Sprintf(`<obj type="%s">%s</obj>`, escape(kind), escape(value))}
}

func writeFault(w http.ResponseWriter, f *vimFault) {
	writeEnvelope(w, http.StatusInternalServerError, fmt.Sprintf(
		`<soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>%s</faultstring><detail><%sFault xmlns="urn:vim25" xsi:type="%s">%s</%sFault></detail></soapenv:Fault>`,
		escape(f.message), f.kind, f.kind, f.fields, f.kind))
}

type area struct{ start, length int64 }

func (a area) end() int64 { return a.start + a.length }

func writeDiskChangeInfo(w http.ResponseWriter, start, length int64, areas []area) {
	// Appended, not Fprintf'd: thousands of areas a page, and the bed's
	// CPU time is not vSphere's (its latency is modelled, see control.go).
	b := make([]byte, 0, 256+80*len(areas))
	b = append(b, `<QueryChangedDiskAreasResponse xmlns="urn:vim25"><returnval><startOffset>`...)
	b = strconv.AppendInt(b, start, 10)
	b = append(b, "</startOffset><length>"...)
	b = strconv.AppendInt(b, length, 10)
	b = append(b, "</length>"...)
	for _, a := range areas {
		b = append(b, "<changedArea><start>"...)
		b = strconv.AppendInt(b, a.start, 10)
		b = append(b, "</start><length>"...)
		b = strconv.AppendInt(b, a.length, 10)
		b = append(b, "</length></changedArea>"...)
	}
	b = append(b, "</returnval></QueryChangedDiskAreasResponse>"...)
	writeEnvelope(w, http.StatusOK, string(b))
}
