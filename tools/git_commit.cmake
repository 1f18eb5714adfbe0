# Run at every build (CMakeLists.txt, target ert_commit): writes OUT, a header defining
# ERT_GIT_COMMIT (`git describe --always --dirty` of SRC, or "unknown" outside a git
# checkout), only when it changed, so that only runtime/version.c recompiles.
execute_process(COMMAND git -C "${SRC}" describe --always --dirty --abbrev=12
                OUTPUT_VARIABLE commit OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE failed)
if(failed OR commit STREQUAL "")
  set(commit "unknown")
endif()
set(text "#define ERT_GIT_COMMIT \"${commit}\"\n")
set(old "")
if(EXISTS "${OUT}")
  file(READ "${OUT}" old)
endif()
if(NOT old STREQUAL text)
  file(WRITE "${OUT}" "${text}")
endif()
