# taskvent_target_defaults(target): the warnings (and, on request, sanitizers) every
# taskvent target is built with. One helper so that no target drifts from the others.
function(taskvent_target_defaults target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor
                                           -Wold-style-cast -Wcast-align -Wunused -Woverloaded-virtual
                                           -Wnull-dereference -Wdouble-promotion -Wformat=2)
  if(TASKVENT_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
  if(TASKVENT_SANITIZE)
    target_compile_options(${target} PRIVATE -fsanitize=address,undefined -fno-omit-frame-pointer)
    target_link_options(${target} PRIVATE -fsanitize=address,undefined)
  endif()
endfunction()
