// PLACEHOLDER: replaced by the OpenCL backend work.
__kernel void tb_sgd(__global float *p) { }
