;; A reactor whose handler traps at once: the runtime must report a function error and
;; recycle the instance, and the environment must stay usable.
(module
  (memory (export "memory") 1)
  (func (export "_initialize"))
  (func (export "handle")
    unreachable))
