module ds.invalid/ds

go 1.19
