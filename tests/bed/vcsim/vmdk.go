package main

// Just enough of the VMDK layout to find a disk's files and where its
// data is: the extents of a text descriptor.

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

type extent struct {
	file    string // absolute
	kind    string // FLAT, VMFS, SPARSE, ...
	sectors int64
	offset  int64 // sectors into file (flat kinds)
}

var extentLine = regexp.MustCompile(`^\s*(?:RW|RDONLY|NOACCESS)\s+(\d+)\s+(\w+)\s+"([^"]*)"(?:\s+(\d+))?`)

// diskExtents: the extents of a descriptor, or the file itself as one
// extent ("RAW" for a plain file, "SPARSE" for a binary VMDK).
func diskExtents(disk string, capacity int64) ([]extent, error) {
	f, err := os.Open(disk)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	head := make([]byte, 21)
	n, _ := f.ReadAt(head, 0)
	switch {
	case string(head[:n]) == "# Disk DescriptorFile":
	case n >= 4 && (string(head[:4]) == "KDMV" || string(head[:4]) == "COWD"):
		return []extent{{file: disk, kind: "SPARSE", sectors: capacity / 512}}, nil
	default:
		return []extent{{file: disk, kind: "RAW", sectors: capacity / 512}}, nil
	}
	var out []extent
	scan := bufio.NewScanner(f)
	for scan.Scan() {
		m := extentLine.FindStringSubmatch(scan.Text())
		if m == nil {
			continue
		}
		sectors, _ := strconv.ParseInt(m[1], 10, 64)
		offset, _ := strconv.ParseInt(m[4], 10, 64)
		e := extent{kind: strings.ToUpper(m[2]), sectors: sectors, offset: offset}
		if m[3] != "" {
			e.file = filepath.Join(filepath.Dir(disk), m[3])
		}
		out = append(out, e)
	}
	return out, scan.Err()
}

// diskFiles: the descriptor and every extent file.
func diskFiles(disk string, capacity int64) ([]string, error) {
	extents, err := diskExtents(disk, capacity)
	if err != nil {
		return nil, err
	}
	files := []string{disk}
	for _, e := range extents {
		if e.file != "" && e.file != disk {
			files = append(files, e.file)
		}
	}
	return files, nil
}

const (
	seekData = 3 // SEEK_DATA, SEEK_HOLE (Linux)
	seekHole = 4
)

// allocatedGrains: the grains of the disk holding data: the data regions
// (SEEK_DATA) of flat extents; sparse extents count as all data.
func allocatedGrains(disk string, capacity, grain int64) ([]int64, error) {
	extents, err := diskExtents(disk, capacity)
	if err != nil {
		return nil, err
	}
	var out []int64
	var base int64 // disk byte where the extent starts
	mark := func(from, to int64) {
		for g := from / grain; g*grain < to && g*grain < capacity; g++ {
			if len(out) == 0 || out[len(out)-1] < g {
				out = append(out, g)
			}
		}
	}
	for _, e := range extents {
		size := e.sectors * 512
		switch e.kind {
		case "FLAT", "VMFS", "RAW":
			err = dataRegions(e.file, e.offset*512, size, func(from, to int64) {
				mark(base+from, base+to)
			})
			if err != nil {
				return nil, err
			}
		case "ZERO":
		default:
			mark(base, base+size)
		}
		base += size
	}
	return out, nil
}

// dataRegions calls fn(from, to) (relative to start) for the data of file
// in [start, start+size).
func dataRegions(file string, start, size int64, fn func(from, to int64)) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	end := start + size
	for off := start; off < end; {
		data, err := f.Seek(off, seekData)
		if err != nil || data >= end {
			return nil // ENXIO: no data after off
		}
		hole, err := f.Seek(data, seekHole)
		if err != nil {
			return err
		}
		if hole > end {
			hole = end
		}
		fn(data-start, hole-start)
		off = hole
	}
	return nil
}
