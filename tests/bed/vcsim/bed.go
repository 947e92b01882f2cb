package main

import (
	"context"
	"crypto/sha1"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// Bed is the running server: the simulator, the VM it was asked for and
// the test knobs (latency, paging) with the call counters.
type Bed struct {
	inv    *Inventory
	model  *simulator.Model
	server *simulator.Server
	inner  http.Handler // the simulator's own handler
	vm     types.ManagedObjectReference
	disks  []*trackedDisk

	client *govmomi.Client // the server's own session (internalAgent)

	snapshotLock sync.Mutex // one CreateSnapshot at a time
	mu           sync.Mutex // protects everything below
	state        State
	knobs        knobs
	calls        map[string]int
}

// internalAgent marks the server's own requests.
const internalAgent = "vddkpy-vcsim-internal"

// trackedDisk is one of the VM's disks and where it lives on this machine.
type trackedDisk struct {
	key      int32
	fileName string
	path     string // the descriptor
	capacity int64
}

func startBed(inv *Inventory) (*Bed, error) {
	model := simulator.ESX()
	model.Datastore = 0
	model.Machine = 0
	if inv.Version != "" {
		reportVersion(&model.ServiceContent.About, inv.Version)
	}
	if err := model.Create(); err != nil {
		return nil, err
	}
	tlsConfig, err := selfSignedTLS()
	if err != nil {
		return nil, err
	}
	model.Service.TLS = tlsConfig
	model.Service.Listen = &url.URL{Host: "127.0.0.1:0",
		User: url.UserPassword(inv.User, inv.Password)}
	b := &Bed{inv: inv, model: model, calls: map[string]int{}}
	b.knobs.reset()
	b.server = model.Service.NewServer()
	b.inner = b.server.Config.Handler
	b.server.Config.Handler = b
	if err := b.populate(); err != nil {
		b.close()
		return nil, err
	}
	b.control(&controlRequest{Reset: true}) // tests count their own calls
	return b, b.publish()
}

// reportVersion makes About say vSphere version (e.g. "8.0.2"): the
// version step of vddkpy check reads it anonymously from /sdk.
func reportVersion(about *types.AboutInfo, version string) {
	about.Version = version
	about.FullName = "VMware ESXi " + version + " build-1"
}

func (b *Bed) close() {
	b.server.Close()
	b.model.Remove()
}

// populate makes the inventory through the vSphere API, as a user would:
// datastores on the host, then the VM with its existing disks.
func (b *Bed) populate() error {
	ctx := context.Background()
	c, err := govmomi.NewClient(ctx, b.server.URL, true)
	if err != nil {
		return err
	}
	c.Client.UserAgent = internalAgent
	b.client = c
	finder := find.NewFinder(c.Client, false)
	dc, err := finder.DefaultDatacenter(ctx)
	if err != nil {
		return err
	}
	finder.SetDatacenter(dc)
	host, err := finder.DefaultHostSystem(ctx)
	if err != nil {
		return err
	}
	if err := b.addDatastores(ctx, host); err != nil {
		return err
	}
	vm, err := b.createVM(ctx, dc, host)
	if err != nil {
		return err
	}
	b.vm = vm.Reference()
	if b.inv.VM.PowerOn {
		task, err := vm.PowerOn(ctx)
		if err != nil {
			return err
		}
		if err := task.Wait(ctx); err != nil {
			return err
		}
	}
	if err := b.findDisks(ctx, vm); err != nil {
		return err
	}
	b.publishPowerState()
	return nil
}

func (b *Bed) addDatastores(ctx context.Context, host *object.HostSystem) error {
	dss, err := host.ConfigManager().DatastoreSystem(ctx)
	if err != nil {
		return err
	}
	for name, dir := range b.inv.Datastores {
		if _, err := dss.CreateLocalDatastore(ctx, name, dir); err != nil {
			return fmt.Errorf("datastore %s at %s: %v", name, dir, err)
		}
	}
	return nil
}

func (b *Bed) createVM(ctx context.Context, dc *object.Datacenter, host *object.HostSystem) (*object.VirtualMachine, error) {
	var devices object.VirtualDeviceList
	scsi, err := devices.CreateSCSIController("pvscsi")
	if err != nil {
		return nil, err
	}
	devices = append(devices, scsi)
	controller := devices.PickController(scsi.(types.BaseVirtualController))
	for _, d := range b.inv.VM.Disks {
		disk := devices.CreateDisk(controller, types.ManagedObjectReference{}, d.FileName)
		disk.Key = int32(2000 + len(devices) - 1) // as ESXi numbers SCSI disks
		disk.CapacityInKB = d.Capacity / 1024
		disk.CapacityInBytes = d.Capacity
		devices = append(devices, disk)
	}
	// Existing disks: no file operation, the server only checks they exist.
	var changes []types.BaseVirtualDeviceConfigSpec
	for _, dev := range devices {
		changes = append(changes, &types.VirtualDeviceConfigSpec{
			Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: dev})
	}
	// The .vmx next to the first disk, as ESXi lays a VM out.
	first := object.DatastorePath{}
	first.FromString(b.inv.VM.Disks[0].FileName)
	first.Path = path.Join(path.Dir(first.Path), b.inv.VM.Name+".vmx")
	spec := types.VirtualMachineConfigSpec{
		Name:         b.inv.VM.Name,
		GuestId:      string(types.VirtualMachineGuestOsIdentifierOtherGuest64),
		Files:        &types.VirtualMachineFileInfo{VmPathName: first.String()},
		DeviceChange: changes,
		// Off until a test enables it, as on a new VM.
		ChangeTrackingEnabled: types.NewBool(false),
	}
	folders, err := dc.Folders(ctx)
	if err != nil {
		return nil, err
	}
	pool, err := host.ResourcePool(ctx)
	if err != nil {
		return nil, err
	}
	task, err := folders.VmFolder.CreateVM(ctx, spec, pool, host)
	if err != nil {
		return nil, err
	}
	info, err := task.WaitForResult(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("CreateVM: %v", err)
	}
	return object.NewVirtualMachine(folders.VmFolder.Client(), info.Result.(types.ManagedObjectReference)), nil
}

// findDisks records the keys the server gave the VM's disks.
func (b *Bed) findDisks(ctx context.Context, vm *object.VirtualMachine) error {
	devices, err := vm.Device(ctx)
	if err != nil {
		return err
	}
	for _, dev := range devices.SelectByType((*types.VirtualDisk)(nil)) {
		disk := dev.(*types.VirtualDisk)
		backing := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
		path, err := b.localPath(b.inv.Datastores, backing.FileName)
		if err != nil {
			return err
		}
		capacity := disk.CapacityInBytes // exact; KB may round down
		if capacity == 0 {
			capacity = disk.CapacityInKB * 1024
		}
		b.disks = append(b.disks, &trackedDisk{key: disk.Key,
			fileName: backing.FileName, path: path, capacity: capacity})
	}
	return nil
}

// localPath: "[ds] rel/x.vmdk" -> the file on this machine.
func (b *Bed) localPath(datastores map[string]string, fileName string) (string, error) {
	ds, rel := splitDatastorePath(fileName)
	dir, ok := datastores[ds]
	if !ok {
		return "", fmt.Errorf("%s: no datastore %q", fileName, ds)
	}
	return filepath.Join(dir, rel), nil
}

func splitDatastorePath(fileName string) (string, string) {
	var p object.DatastorePath
	p.FromString(fileName)
	return p.Datastore, p.Path
}

// publish writes the state file the fixture waits for.
func (b *Bed) publish() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := &b.state
	host, port, _ := net.SplitHostPort(b.server.Listener.Addr().String())
	st.Host = host
	st.Port, _ = strconv.Atoi(port)
	st.Thumbprint = thumbprint(b.server.Certificate().Raw)
	st.VM = b.vm.Value
	st.Disks = st.Disks[:0]
	for _, d := range b.disks {
		st.Disks = append(st.Disks, StateDisk{Key: d.key, FileName: d.fileName,
			Path: d.path, Capacity: d.capacity})
	}
	if st.Snapshots == nil {
		st.Snapshots = []StateSnapshot{}
	}
	return writeState(b.inv.State, st)
}

// thumbprint is the certificate's SHA-1 as vSphere and VDDK print it.
func thumbprint(der []byte) string {
	sum := sha1.Sum(der)
	hex := make([]string, len(sum))
	for i, v := range sum {
		hex[i] = fmt.Sprintf("%02X", v)
	}
	return strings.Join(hex, ":")
}
