module kubeslim.local/pause

go 1.24
