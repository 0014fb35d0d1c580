# stepc import-onnx writes a .sg graph and its weights beside it as
# MODEL.safetensors; the graph checks, and `stepc run` runs the .onnx model
# directly.
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})
execute_process(COMMAND ${STEPC} import-onnx ${MODEL} -o ${WORK}/conv.sg
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0 OR NOT EXISTS ${WORK}/conv.sg)
  message(FATAL_ERROR "import-onnx failed (${rc}):\n${err}")
endif()
if(NOT EXISTS ${WORK}/conv.safetensors OR NOT err MATCHES "wrote [0-9]+ params? to .*conv.safetensors")
  message(FATAL_ERROR "import-onnx wrote no weights to ${WORK}/conv.safetensors:\n${err}")
endif()
execute_process(COMMAND ${STEPC} check ${WORK}/conv.sg
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0 OR NOT out MATCHES "is valid")
  message(FATAL_ERROR "the imported graph does not check (${rc}):\n${out}${err}")
endif()
execute_process(COMMAND ${STEPC} run ${MODEL} --seed 1
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0 OR NOT out MATCHES ": f32\\[")
  message(FATAL_ERROR "stepc run on the .onnx model failed (${rc}):\n${out}${err}")
endif()
# A model whose Reshape target is a graph input runs once that input is given.
execute_process(COMMAND ${STEPC} run ${RESHAPE_MODEL}
                RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 1 OR NOT err MATCHES "must be known at import.*--input shape=FILE.npy")
  message(FATAL_ERROR "a Reshape fed by an input should ask for its value, got ${rc}:\n${err}")
endif()
