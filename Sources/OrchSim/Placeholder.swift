// The simulator; see Simulator.swift once written.
