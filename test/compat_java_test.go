package test

// compatJavaCells are the matrix's java cells.
func compatJavaCells() []compatCell {
	return nil
}
