package test

// compatPythonCells are the matrix's python cells.
func compatPythonCells() []compatCell {
	return nil
}
