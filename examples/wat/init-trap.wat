;; A reactor that traps while initialising: instantiating it must fail cleanly, before any
;; invocation reaches `handle`.
(module
  (memory (export "memory") 1)
  (func (export "_initialize")
    unreachable)
  (func (export "handle")))
