// Command vcsim serves govmomi's simulator as an ESXi host holding one VM
// whose disks are files on the test machine, served to the plugin by the
// VDDK stand-in, extended with vSphere's changed block tracking (see
// README.md): the fixture in tests/bed/vcenter.py starts it.
package main

import (
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	inventoryPath := flag.String("inventory", "", "inventory JSON written by the fixture")
	// The fixture holds the other end of stdin: a test run that dies,
	// even killed outright, closes it and so ends this server.
	watchStdin := flag.Bool("exit-on-eof", false, "exit when stdin reaches end of file")
	flag.Parse()
	if *inventoryPath == "" {
		fail(fmt.Errorf("usage: vcsim -inventory FILE"))
	}
	inv, err := readInventory(*inventoryPath)
	if err != nil {
		fail(err)
	}
	if _, err := startBed(inv); err != nil {
		fail(err)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	if *watchStdin {
		go func() {
			_, _ = io.Copy(ioutil.Discard, os.Stdin)
			stop <- syscall.SIGTERM
		}()
	}
	<-stop
	// Nothing to save: the model made no directories of its own, and
	// closing connections gracefully would only make the fixture wait.
	os.Exit(0)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "vcsim:", err)
	os.Exit(1)
}
