package xfer

var foldNames = [...]string{foldNone: "stdlib", fold128: "avx", fold256: "avx2", fold512: "avx512"}

// eachFold calls run with each fold this machine can run turned on in
// turn, from the widest it has down to none (the standard library).
func eachFold(run func(name string)) {
	defer func(best int) { fold = best }(fold)
	for f := fold; f >= foldNone; f-- {
		fold = f
		run(foldNames[f])
	}
}
