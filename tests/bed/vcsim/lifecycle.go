package main

// What a warm migration does to a VM beyond change tracking: it is powered
// off for the last copy (the stand-in reads the power state from a file
// this server keeps: inventory "power_file"), its disks grow, and its
// snapshots come and go without ever touching the running disk's files.

import (
	"fmt"
	"io/ioutil"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strconv"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// powerTask: PowerOnVM_Task / PowerOffVM_Task answered once the task is
// done and the power file says so, so that a client which saw the task
// finish finds the stand-in agreeing.
func (b *Bed) powerTask(w http.ResponseWriter, r *http.Request) {
	rec := httptest.NewRecorder()
	b.inner.ServeHTTP(rec, r)
	if rec.Code == http.StatusOK {
		if ref, err := taskOf(rec.Body.Bytes()); err == nil {
			_, _ = b.waitTask(ref)
		}
	}
	b.publishPowerState()
	copyRecorded(w, rec)
}

// publishPowerState makes the power file exist exactly while the VM is
// powered on.
func (b *Bed) publishPowerState() {
	if b.inv.PowerFile == "" {
		return
	}
	var on bool
	withVM(b.vm, func(vm *simulator.VirtualMachine) {
		on = vm.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn
	})
	if on {
		_ = ioutil.WriteFile(b.inv.PowerFile, []byte("poweredOn\n"), 0o644)
	} else {
		_ = os.Remove(b.inv.PowerFile)
	}
}

// growRequest: POST /vddkpy/control {"grow": {"fileName": F, "capacity": N}}
// extends a disk as an administrator does (its extent grows, the device's
// capacity follows); the new tail reads as zeros and is not recorded as
// changed, the worst a client may meet.
type growRequest struct {
	FileName string `json:"fileName"`
	Capacity int64  `json:"capacity"`
}

var lastExtentSectors = regexp.MustCompile(`(?m)^(RW\s+)(\d+)(\s+FLAT\s+"[^"]*"\s+0)\s*$`)

func (b *Bed) grow(req *growRequest) error {
	var d *trackedDisk
	for _, candidate := range b.disks {
		if candidate.fileName == req.FileName {
			d = candidate
		}
	}
	if d == nil {
		return fmt.Errorf("no disk %s", req.FileName)
	}
	if req.Capacity <= d.capacity || req.Capacity%512 != 0 {
		return fmt.Errorf("capacity %d: not a multiple of 512 above %d", req.Capacity, d.capacity)
	}
	extents, err := diskExtents(d.path, d.capacity)
	if err != nil || len(extents) != 1 || extents[0].kind != "FLAT" {
		return fmt.Errorf("%s: only a one-extent flat disk can grow", d.path)
	}
	descriptor, err := ioutil.ReadFile(d.path)
	if err != nil {
		return err
	}
	descriptor = lastExtentSectors.ReplaceAll(descriptor,
		[]byte("${1}"+strconv.FormatInt(req.Capacity/512, 10)+"${3}"))
	if err := os.Truncate(extents[0].file, req.Capacity); err != nil {
		return err
	}
	if err := ioutil.WriteFile(d.path, descriptor, 0o644); err != nil {
		return err
	}
	b.mu.Lock()
	d.capacity = req.Capacity
	b.mu.Unlock()
	withVM(b.vm, func(vm *simulator.VirtualMachine) {
		for _, dev := range vm.Config.Hardware.Device {
			if disk, backing := flatBacking(dev); backing != nil && disk.Key == d.key {
				disk.CapacityInBytes = req.Capacity
				disk.CapacityInKB = req.Capacity / 1024
			}
		}
	})
	return b.publish()
}
