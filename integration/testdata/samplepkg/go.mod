module samplepkg

go 1.26
