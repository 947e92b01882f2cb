package main

// Changed block tracking on the VM: enabling it creates each disk's
// sidecar, each disk backing's changeId follows the sidecar, and
// QueryChangedDiskAreas answers from it, a page at a time.

import (
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

func (b *Bed) diskByKey(key int32) *trackedDisk {
	for _, d := range b.disks {
		if d.key == key {
			return d
		}
	}
	return nil
}

func flatBacking(dev types.BaseVirtualDevice) (*types.VirtualDisk, *types.VirtualDiskFlatVer2BackingInfo) {
	disk, ok := dev.(*types.VirtualDisk)
	if !ok {
		return nil, nil
	}
	backing, _ := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
	return disk, backing
}

func trackingEnabled(cfg *types.VirtualMachineConfigInfo) bool {
	return cfg.ChangeTrackingEnabled != nil && *cfg.ChangeTrackingEnabled
}

// currentChangeID: the disk's changeId now ("" when it is not tracked).
func currentChangeID(ctkFile string) string {
	t, err := openCtk(ctkFile, false)
	if err != nil {
		return ""
	}
	defer t.close()
	return t.changeID()
}

// refreshChangeIDs makes the VM's disk backings show the changeIds the
// stand-in's writes have reached, before the simulator answers anything.
func (b *Bed) refreshChangeIDs() {
	withVM(b.vm, func(vm *simulator.VirtualMachine) {
		enabled := trackingEnabled(vm.Config)
		for _, dev := range vm.Config.Hardware.Device {
			disk, backing := flatBacking(dev)
			if backing == nil || b.diskByKey(disk.Key) == nil {
				continue
			}
			backing.ChangeId = ""
			if enabled {
				backing.ChangeId = currentChangeID(ctkPath(b.diskByKey(disk.Key).path))
			}
		}
	})
}

// beforeReconfigure: ReconfigVM_Task changeTrackingEnabled=true creates
// the sidecars (with a new tracking id: earlier changeIds become
// invalid), false deletes them, as ESXi does with its -ctk.vmdk files.
func (b *Bed) beforeReconfigure(call *soapCall) {
	enable := call.Spec.ChangeTrackingEnabled
	if enable == nil {
		return
	}
	for _, d := range b.disks {
		path := ctkPath(d.path)
		_, err := os.Stat(path)
		switch {
		case *enable && os.IsNotExist(err):
			err = createCtk(d.path, d.capacity)
		case !*enable:
			err = os.Remove(path)
			if os.IsNotExist(err) {
				err = nil
			}
		}
		if err != nil {
			log.Printf("change tracking of %s: %v", d.fileName, err)
		}
	}
}

// queryChangedDiskAreas: the simulator first checks the session and the
// object (its NotAuthenticated or ManagedObjectNotFound faults are passed
// on); then the answer comes from the disk's sidecar.
func (b *Bed) queryChangedDiskAreas(w http.ResponseWriter, r *http.Request, call *soapCall) {
	rec := httptest.NewRecorder()
	b.inner.ServeHTTP(rec, r)
	answer := rec.Body.String()
	if call.This != b.vm.Value || strings.Contains(answer, `"NotAuthenticated"`) ||
		strings.Contains(answer, `"ManagedObjectNotFound"`) {
		copyRecorded(w, rec)
		return
	}
	start, length, areas, fault := b.changedAreas(call)
	if fault != nil {
		writeFault(w, fault)
		return
	}
	writeDiskChangeInfo(w, start, length, areas)
}

func copyRecorded(w http.ResponseWriter, rec *httptest.ResponseRecorder) {
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

// trackedFile: the sidecar a query reads (the snapshot's frozen one, or
// the running disk's) and the disk's capacity there.
func (b *Bed) trackedFile(call *soapCall, d *trackedDisk) (string, int64, *vimFault) {
	if call.Snapshot == "" {
		var enabled, running bool
		withVM(b.vm, func(vm *simulator.VirtualMachine) {
			enabled = trackingEnabled(vm.Config)
			running = vm.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn
		})
		// vSphere computes changes against the current state only for a
		// powered-off VM: a running VM's disk is locked.
		if !enabled {
			return "", 0, fileFault(d.fileName, cbtNotTracked)
		}
		if running {
			return "", 0, fileFault(d.fileName, "")
		}
		return ctkPath(d.path), d.capacity, nil
	}
	snap := b.findSnapshot(call.Snapshot)
	if snap == nil {
		return "", 0, objectNotFound("VirtualMachineSnapshot", "vm.Snapshot", call.Snapshot)
	}
	path, err := b.localPath(snap.Datastores, d.fileName)
	if err != nil {
		return "", 0, fileFault(d.fileName, "")
	}
	return ctkPath(path), d.capacity, nil
}

func (b *Bed) changedAreas(call *soapCall) (int64, int64, []area, *vimFault) {
	d := b.diskByKey(call.DeviceKey)
	if d == nil {
		return 0, 0, nil, invalidArgument("deviceKey")
	}
	file, capacity, fault := b.trackedFile(call, d)
	if fault != nil {
		return 0, 0, nil, fault
	}
	if call.StartOffset < 0 || call.StartOffset >= capacity {
		return 0, 0, nil, invalidArgument("startOffset")
	}
	t, err := openCtk(file, false)
	if os.IsNotExist(err) {
		return 0, 0, nil, fileFault(d.fileName, cbtNotTracked)
	}
	if err != nil {
		return 0, 0, nil, fileFault(d.fileName, "")
	}
	defer t.close()
	since, ok := t.since(call.ChangeId)
	if !ok {
		return 0, 0, nil, invalidArgument("changeId")
	}
	b.mu.Lock()
	k := b.knobs
	b.mu.Unlock()
	areas, length, err := collectAreas(t, since, call.StartOffset, capacity, k)
	if err != nil {
		return 0, 0, nil, fileFault(d.fileName, "")
	}
	return call.StartOffset, length, areas, nil
}

// collectAreas: one page of the areas changed after sequence number
// since, from start: merged runs of changed grains, clipped to the page.
// The page ends at the disk's end, after page_bytes, or after the
// page_areas-th area, whichever comes first; the length it covers is
// returned (the next page starts there).
func collectAreas(t *ctk, since uint64, start, capacity int64, k knobs) ([]area, int64, error) {
	end := capacity
	if k.pageBytes > 0 && start+k.pageBytes < end {
		end = start + k.pageBytes
	}
	var areas []area
	seqs := make([]uint64, 8192)
	buf := make([]byte, 8*len(seqs))
	for first := start / t.grain; first*t.grain < end; first += int64(len(seqs)) {
		if err := t.grains(first, seqs, buf); err != nil {
			return nil, 0, err
		}
		for i, seq := range seqs {
			from := (first + int64(i)) * t.grain
			if from >= end {
				break
			}
			if seq <= since {
				continue
			}
			to := from + t.grain
			if from < start {
				from = start
			}
			if to > end {
				to = end
			}
			n := len(areas)
			if n > 0 && areas[n-1].end() == from {
				areas[n-1].length += to - from
				continue
			}
			if k.pageAreas > 0 && n == k.pageAreas {
				return areas, areas[n-1].end() - start, nil
			}
			areas = append(areas, area{from, to - from})
		}
	}
	return areas, end - start, nil
}
