;; An http-wasm guest that writes to WASI stdout the way Rust's runtime reports a failed
;; allocation: one line in three `fd_write`s (`memory allocation of ` / `2097152` /
;; ` bytes failed\n`), then `unfinished` without a newline. The host logs one record per line
;; and the unfinished line when the guest call returns. It answers 200 `ok` itself.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "http_handler" "write_body" (func $write_body (param i32 i32 i32)))

  (memory (export "memory") 1)

  (data (i32.const 64) "memory allocation of 2097152 bytes failed\n") ;; 21 + 7 + 14
  (data (i32.const 128) "unfinished") ;; 10
  (data (i32.const 144) "ok")         ;; 2

  ;; One fd_write to stdout of the bytes at $p, $n; the iovec at 0, nwritten at 8.
  (func $write (param $p i32) (param $n i32)
    (i32.store (i32.const 0) (local.get $p))
    (i32.store (i32.const 4) (local.get $n))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))

  (func (export "handle_request") (result i64)
    (call $write (i32.const 64) (i32.const 21))
    (call $write (i32.const 85) (i32.const 7))
    (call $write (i32.const 92) (i32.const 14))
    (call $write (i32.const 128) (i32.const 10))
    (call $write_body (i32.const 1) (i32.const 144) (i32.const 2))
    (i64.const 0))
)
