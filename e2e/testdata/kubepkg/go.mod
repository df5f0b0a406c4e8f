module example.com/kubepkg

go 1.26
