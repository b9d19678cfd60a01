package test

// compatNodeCells are the matrix's node cells.
func compatNodeCells() []compatCell {
	return nil
}
