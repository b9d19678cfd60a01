package test

// compatToolCells are the matrix's tool cells.
func compatToolCells() []compatCell {
	return nil
}
