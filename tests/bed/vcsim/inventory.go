package main

import (
	"encoding/json"
	"fmt"
	"io/ioutil"
	"os"
	"path/filepath"
)

// Inventory is what the fixture asks for: the one description from which
// both this server and the stand-in's "server" block are made.
type Inventory struct {
	User         string            `json:"user"`
	Password     string            `json:"password"`
	Datastores   map[string]string `json:"datastores"` // name -> local directory
	VM           InventoryVM       `json:"vm"`
	SnapshotsDir string            `json:"snapshots_dir"` // frozen snapshot copies go here
	State        string            `json:"state"`         // where to write State
	// Exists while the VM is powered on (the stand-in's "running_while").
	PowerFile string `json:"power_file"`
	Version   string `json:"version"` // the vSphere version About reports ("" keeps govmomi's)
}

type InventoryVM struct {
	Name    string          `json:"name"`
	PowerOn bool            `json:"power_on"`
	Disks   []InventoryDisk `json:"disks"`
}

type InventoryDisk struct {
	FileName string `json:"fileName"` // "[datastore1] vm/vm.vmdk"
	Capacity int64  `json:"capacity"` // bytes
}

// State is what the server tells the fixture, rewritten after every
// change: where it listens, its certificate, the morefs it chose.
type State struct {
	Host       string          `json:"host"`
	Port       int             `json:"port"`
	Thumbprint string          `json:"thumbprint"`
	VM         string          `json:"vm"`
	Disks      []StateDisk     `json:"disks"`
	Snapshots  []StateSnapshot `json:"snapshots"`
}

type StateDisk struct {
	Key      int32  `json:"key"`
	FileName string `json:"fileName"`
	Path     string `json:"path"` // the descriptor on this machine
	Capacity int64  `json:"capacity"`
}

type StateSnapshot struct {
	Moref string `json:"moref"`
	Name  string `json:"name"`
	// Datastores of the frozen copy: name -> local directory holding the
	// disks as they were when the snapshot was taken.
	Datastores map[string]string `json:"datastores"`
	ChangeIds  map[string]string `json:"changeIds"` // fileName -> changeId
}

func readInventory(path string) (*Inventory, error) {
	data, err := ioutil.ReadFile(path)
	if err != nil {
		return nil, err
	}
	inv := new(Inventory)
	if err := json.Unmarshal(data, inv); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	if inv.State == "" || inv.SnapshotsDir == "" || len(inv.VM.Disks) == 0 {
		return nil, fmt.Errorf("%s: state, snapshots_dir and vm.disks are required", path)
	}
	return inv, nil
}

// writeState replaces the state file atomically, so the fixture never
// reads half of it.
func writeState(path string, st *State) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := ioutil.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
