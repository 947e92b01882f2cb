package main

// Every use of the simulator's internals (its object registry) is here,
// so a govmomi with another registry API needs changes in this file only.

import (
	"strings"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// withVM runs fn on the simulator's VM object, locked as the simulator
// locks it while serving one of its methods.
func withVM(ref types.ManagedObjectReference, fn func(vm *simulator.VirtualMachine)) bool {
	vm, ok := simulator.Map.Get(ref).(*simulator.VirtualMachine)
	if ok {
		simulator.Map.WithLock(vm, func() { fn(vm) })
	}
	return ok
}

// withSnapshotConfig runs fn on a snapshot's configuration, locked.
func withSnapshotConfig(ref types.ManagedObjectReference, fn func(cfg *types.VirtualMachineConfigInfo)) bool {
	snap, ok := simulator.Map.Get(ref).(*simulator.VirtualMachineSnapshot)
	if ok {
		simulator.Map.WithLock(snap, func() { fn(&snap.Config) })
	}
	return ok
}

// setTaskEntity makes a task's entity the VM, as vSphere reports it for
// snapshot tasks (the simulator names the snapshot, which is not a
// ManagedEntity: pyvmomi then cannot read the task).
func setTaskEntity(task, vm types.ManagedObjectReference) {
	if t, ok := simulator.Map.Get(task).(*simulator.Task); ok {
		simulator.Map.WithLock(t, func() { t.Info.Entity = &vm })
	}
}

// keepDiskFiles stops the simulator's snapshot removal from deleting
// files: it deletes the files whose keys a snapshot's layout holds, and
// those keys come to name the VM's .vmdk files once it has listed the
// VM's files again (removing S1 then S3 deleted vm.vmdk).  Returns the
// .vmsn files of the snapshot named (all if none) by the names
// their plain layouts keep, for the caller to delete.
func keepDiskFiles(ref types.ManagedObjectReference, snapshot string) []string {
	var vmsn []string
	withVM(ref, func(vm *simulator.VirtualMachine) {
		for i := range vm.LayoutEx.Snapshot {
			vm.LayoutEx.Snapshot[i].DataKey = -1
			vm.LayoutEx.Snapshot[i].MemoryKey = -1
		}
		for _, layout := range vm.Layout.Snapshot {
			if snapshot != "" && layout.Key.Value != snapshot {
				continue
			}
			for _, name := range layout.SnapshotFile {
				if strings.HasSuffix(name, ".vmsn") {
					vmsn = append(vmsn, name)
				}
			}
		}
	})
	return vmsn
}
