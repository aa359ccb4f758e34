//go:build nocuda

package engine

// cudaLeftOut says why "cuda" is not registered in this build.
const cudaLeftOut = "this binary was built with -tags nocuda, which leaves the CUDA backend out"
