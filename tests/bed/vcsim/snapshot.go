package main

// CreateSnapshot_Task as ESXi does it for change tracking: the disks are
// frozen as they are (a copy of each disk's files and sidecar, which the
// stand-in serves for that snapshot moref), and the snapshot's disk
// backings carry the changeId current at that moment.

import (
	"context"
	"encoding/xml"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/types"
)

func (b *Bed) createSnapshot(w http.ResponseWriter, r *http.Request, call *soapCall) {
	b.snapshotLock.Lock()
	defer b.snapshotLock.Unlock()
	rec := httptest.NewRecorder()
	b.inner.ServeHTTP(rec, r)
	if rec.Code == http.StatusOK {
		if err := b.afterSnapshot(rec.Body.Bytes(), call.Name); err != nil {
			writeFault(w, &vimFault{"SystemError", "vcsim: " + err.Error(),
				"<reason>" + escape(err.Error()) + "</reason>"})
			return
		}
	}
	copyRecorded(w, rec)
}

// taskOf reads the task moref out of a *_Task response.
func taskOf(response []byte) (types.ManagedObjectReference, error) {
	var env struct {
		Body struct {
			Response struct {
				Returnval types.ManagedObjectReference `xml:"returnval"`
			} `xml:",any"`
		} `xml:"Body"`
	}
	if err := xml.Unmarshal(response, &env); err != nil {
		return types.ManagedObjectReference{}, err
	}
	ref := env.Body.Response.Returnval
	ref.Type = "Task"
	return ref, nil
}

// removeSnapshot: once the simulator's task is done, the snapshots it
// removed lose their frozen copies, their stand-in lines and their .vmsn
// files (vmsn: datastore paths).
func (b *Bed) removeSnapshot(w http.ResponseWriter, r *http.Request, vmsn []string) {
	b.snapshotLock.Lock()
	defer b.snapshotLock.Unlock()
	rec := httptest.NewRecorder()
	b.inner.ServeHTTP(rec, r)
	if rec.Code == http.StatusOK {
		if ref, err := taskOf(rec.Body.Bytes()); err == nil {
			setTaskEntity(ref, b.vm)
			if _, err := b.waitTask(ref); err == nil {
				b.removeFiles(vmsn)
			}
		}
		b.pruneSnapshots()
	}
	copyRecorded(w, rec)
}

func (b *Bed) removeFiles(names []string) {
	for _, name := range names {
		if path, err := b.localPath(b.inv.Datastores, name); err == nil {
			_ = os.Remove(path)
		}
	}
}

func (b *Bed) pruneSnapshots() {
	b.mu.Lock()
	kept := b.state.Snapshots[:0]
	for _, snap := range b.state.Snapshots {
		ref := types.ManagedObjectReference{Type: "VirtualMachineSnapshot", Value: snap.Moref}
		if withSnapshotConfig(ref, func(*types.VirtualMachineConfigInfo) {}) {
			kept = append(kept, snap)
		} else {
			_ = os.RemoveAll(filepath.Join(b.inv.SnapshotsDir, snap.Moref))
		}
	}
	b.state.Snapshots = kept
	b.mu.Unlock()
	_ = b.publish()
}

func (b *Bed) waitTask(ref types.ManagedObjectReference) (*types.TaskInfo, error) {
	return object.NewTask(b.client.Client, ref).WaitForResult(context.Background(), nil)
}

func (b *Bed) afterSnapshot(response []byte, name string) error {
	ref, err := taskOf(response)
	if err != nil {
		return err
	}
	info, err := b.waitTask(ref)
	if err != nil {
		return nil // the snapshot failed: the client sees why in the task
	}
	snap, ok := info.Result.(types.ManagedObjectReference)
	if !ok {
		return fmt.Errorf("CreateSnapshot task %s returned %T", ref.Value, info.Result)
	}
	frozen, err := b.freeze(snap)
	if err != nil {
		return err
	}
	frozen.Name = name
	withSnapshotConfig(snap, func(cfg *types.VirtualMachineConfigInfo) {
		cfg.Hardware.Device = withChangeIDs(cfg.Hardware.Device, b, frozen.ChangeIds)
	})
	b.mu.Lock()
	b.state.Snapshots = append(b.state.Snapshots, *frozen)
	b.mu.Unlock()
	return b.publish()
}

// freeze copies each disk's files and sidecar to the snapshot's own
// datastore directories, holding the sidecar's lock so that no write is
// recorded meanwhile.
func (b *Bed) freeze(snap types.ManagedObjectReference) (*StateSnapshot, error) {
	frozen := &StateSnapshot{Moref: snap.Value, Datastores: map[string]string{},
		ChangeIds: map[string]string{}}
	for _, d := range b.disks {
		ds, rel := splitDatastorePath(d.fileName)
		frozen.Datastores[ds] = filepath.Join(b.inv.SnapshotsDir, snap.Value, ds)
		target := filepath.Dir(filepath.Join(frozen.Datastores[ds], rel))
		if err := os.MkdirAll(target, 0o755); err != nil {
			return nil, err
		}
		t, err := openCtk(ctkPath(d.path), true)
		if err == nil {
			frozen.ChangeIds[d.fileName] = t.changeID()
			err = copyDisk(d, ctkPath(d.path), target)
			t.close()
		} else if os.IsNotExist(err) {
			err = copyDisk(d, "", target)
		}
		if err != nil {
			return nil, err
		}
	}
	return frozen, nil
}

// copyDisk copies the descriptor, extents and sidecar (if any) into dir,
// keeping holes (or sharing blocks where the file system can).
func copyDisk(d *trackedDisk, sidecar, dir string) error {
	files, err := diskFiles(d.path, d.capacity)
	if err != nil {
		return err
	}
	if sidecar != "" {
		files = append(files, sidecar)
	}
	args := append([]string{"--reflink=auto", "--sparse=always"}, files...)
	out, err := exec.Command("cp", append(args, dir+"/")...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("cp: %v: %s", err, out)
	}
	return nil
}

// withChangeIDs: the snapshot's devices with its own copies of the disks,
// whose backings carry the changeIds frozen with it (the simulator shares
// device objects between the VM and its snapshots).
func withChangeIDs(devices []types.BaseVirtualDevice, b *Bed, ids map[string]string) []types.BaseVirtualDevice {
	out := make([]types.BaseVirtualDevice, len(devices))
	for i, dev := range devices {
		out[i] = dev
		disk, backing := flatBacking(dev)
		if backing == nil {
			continue
		}
		diskCopy, backingCopy := *disk, *backing
		backingCopy.ChangeId = ids[backing.FileName]
		diskCopy.Backing = &backingCopy
		out[i] = &diskCopy
	}
	return out
}

func (b *Bed) findSnapshot(moref string) *StateSnapshot {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := range b.state.Snapshots {
		if b.state.Snapshots[i].Moref == moref {
			s := b.state.Snapshots[i]
			return &s
		}
	}
	return nil
}
