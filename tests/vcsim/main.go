// Command vcsim serves govmomi's simulator as an ESXi host holding one VM
// whose disks are files on the test machine, served to the plugin by the
// VDDK stand-in, extended with vSphere's changed block tracking (see
// README.md): the fixture in tests/vcsim.py starts it.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	inventoryPath := flag.String("inventory", "", "inventory JSON written by the fixture")
	flag.Parse()
	if *inventoryPath == "" {
		fail(fmt.Errorf("usage: vcsim -inventory FILE"))
	}
	inv, err := readInventory(*inventoryPath)
	if err != nil {
		fail(err)
	}
	b, err := startBed(inv)
	if err != nil {
		fail(err)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
	b.close()
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "vcsim:", err)
	os.Exit(1)
}
