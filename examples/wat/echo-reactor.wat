;; The echo function as a minimal reactor: reads the whole event from stdin and writes it
;; back to stdout. Small enough that an invocation measures the platform, not the function.
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "_initialize"))
  (func (export "handle")
    (local $end i32)
    ;; The event goes to 64 KiB onwards; the iovec lives at 0, the count at 8.
    (local.set $end (i32.const 65536))
    (block $done
      (loop $read
        ;; Keep a free 64 KiB page behind $end.
        (if (i32.gt_u (i32.add (local.get $end) (i32.const 65536))
                      (i32.mul (memory.size) (i32.const 65536)))
          (then (if (i32.lt_s (memory.grow (i32.const 1)) (i32.const 0)) (then unreachable))))
        (i32.store (i32.const 0) (local.get $end))
        (i32.store (i32.const 4) (i32.const 65536))
        (br_if $done (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
        (br_if $done (i32.eqz (i32.load (i32.const 8))))
        (local.set $end (i32.add (local.get $end) (i32.load (i32.const 8))))
        (br $read)))
    (i32.store (i32.const 0) (i32.const 65536))
    (i32.store (i32.const 4) (i32.sub (local.get $end) (i32.const 65536)))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
