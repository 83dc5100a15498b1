;; A reactor whose handler never returns: only the runtime's invocation timeout ends it.
(module
  (memory (export "memory") 1)
  (func (export "_initialize"))
  (func (export "handle")
    (loop $forever
      br $forever)))
