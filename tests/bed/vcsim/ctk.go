package main

// The change-tracking sidecar NAME-ctk.vmdk, written by the VDDK stand-in
// on every write (tests/bed/standin/ctk.c; format in tests/bed/standin/README.md):
// created here when tracking is enabled, read to answer
// QueryChangedDiskAreas and to give each disk its changeId.

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"io/ioutil" // not os.WriteFile: Debian 11 has Go 1.15
	"os"
	"strconv"
	"strings"
	"syscall"
)

const (
	ctkMagic        = "FVCTK001"
	ctkOffGrain     = 8
	ctkOffSeq       = 16
	ctkOffID        = 24
	ctkIDSize       = 48
	ctkHeaderUsed   = ctkOffID + ctkIDSize
	ctkGrainsOffset = 4096
	ctkGrain        = 64 << 10 // ESXi's change tracking granularity
)

func ctkPath(disk string) string {
	if strings.HasSuffix(disk, ".vmdk") {
		return strings.TrimSuffix(disk, ".vmdk") + "-ctk.vmdk"
	}
	return disk + "-ctk"
}

// ctk is an open sidecar, locked (shared or exclusive) until close.
type ctk struct {
	f     *os.File
	grain int64
	id    string
	seq   uint64
}

func openCtk(path string, exclusive bool) (*ctk, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	if err := syscall.Flock(int(f.Fd()), how); err != nil {
		f.Close()
		return nil, err
	}
	t := &ctk{f: f}
	if err := t.readHeader(); err != nil {
		t.close()
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	return t, nil
}

func (t *ctk) close() {
	_ = syscall.Flock(int(t.f.Fd()), syscall.LOCK_UN)
	t.f.Close()
}

func (t *ctk) readHeader() error {
	h := make([]byte, ctkHeaderUsed)
	if _, err := t.f.ReadAt(h, 0); err != nil {
		return err
	}
	if string(h[:8]) != ctkMagic {
		return fmt.Errorf("not a change-tracking file")
	}
	t.grain = int64(binary.LittleEndian.Uint32(h[ctkOffGrain:]))
	t.seq = binary.LittleEndian.Uint64(h[ctkOffSeq:])
	id := h[ctkOffID : ctkOffID+ctkIDSize]
	t.id = string(id[:bytes.IndexByte(append(id, 0), 0)])
	return nil
}

// changeID is vSphere's "TRACKING-ID/SEQUENCE".
func (t *ctk) changeID() string {
	return t.id + "/" + strconv.FormatUint(t.seq, 10)
}

// since parses a changeId of this disk into the sequence number after
// which changes count: "*" is everything ever written.
func (t *ctk) since(changeID string) (uint64, bool) {
	if changeID == "*" {
		return 0, true
	}
	slash := strings.LastIndexByte(changeID, '/')
	if slash < 0 || changeID[:slash] != t.id {
		return 0, false
	}
	seq, err := strconv.ParseUint(changeID[slash+1:], 10, 64)
	if err != nil || seq > t.seq {
		return 0, false
	}
	return seq, true
}

// grains reads the sequence numbers of grains [first, first+len(out))
// through buf (8 bytes a grain, kept by the caller: a page of a large
// disk reads megabytes, which fresh buffers would leave to the garbage
// collector); grains past the end of the file were never written.
func (t *ctk) grains(first int64, out []uint64, buf []byte) error {
	n, err := t.f.ReadAt(buf[:8*len(out)], ctkGrainsOffset+8*first)
	if err != nil && err != io.EOF {
		return err
	}
	for i := range out {
		out[i] = 0
		if 8*i+8 <= n {
			out[i] = binary.LittleEndian.Uint64(buf[8*i:])
		}
	}
	return nil
}

// newTrackingID is a random id printed the way ESXi prints the one in its
// changeIds: "52 xx xx xx xx xx xx xx-xx xx xx xx xx xx xx xx".
func newTrackingID() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	b[0] = 0x52
	parts := make([]string, 16)
	for i, v := range b {
		parts[i] = fmt.Sprintf("%02x", v)
	}
	return strings.Join(parts[:8], " ") + "-" + strings.Join(parts[8:], " "), nil
}

// createCtk starts tracking a disk: a new sidecar whose grains holding
// data are marked written (sequence 1), as ESXi pre-fills its .ctk file
// with the allocated blocks when tracking is enabled.
func createCtk(disk string, capacity int64) error {
	id, err := newTrackingID()
	if err != nil {
		return err
	}
	allocated, err := allocatedGrains(disk, capacity, ctkGrain)
	if err != nil {
		return err
	}
	var seq uint64 = 1
	header := make([]byte, ctkGrainsOffset)
	copy(header, ctkMagic)
	binary.LittleEndian.PutUint32(header[ctkOffGrain:], ctkGrain)
	binary.LittleEndian.PutUint64(header[ctkOffSeq:], seq)
	copy(header[ctkOffID:ctkOffID+ctkIDSize-1], id)
	grains := make([]byte, 8*((capacity+ctkGrain-1)/ctkGrain))
	for _, g := range allocated {
		binary.LittleEndian.PutUint64(grains[8*g:], seq)
	}
	tmp := ctkPath(disk) + ".new"
	if err := ioutil.WriteFile(tmp, append(header, grains...), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, ctkPath(disk))
}
