package test

// compatGoCells are the matrix's Go cells.
func compatGoCells() []compatCell {
	return nil
}
