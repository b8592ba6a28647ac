"""kernels"""
X = 1
