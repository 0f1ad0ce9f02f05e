;; http-wasm: buffers the response, reads all of it and writes it back with its first byte
;; replaced by `#` (a body rewrite whose cost grows with the body).
(module
  (import "http_handler" "enable_features" (func $enable_features (param i32) (result i32)))
  (import "http_handler" "read_body" (func $read_body (param i32 i32 i32) (result i64)))
  (import "http_handler" "write_body" (func $write_body (param i32 i32 i32)))
  ;; Body at 65536, up to 1 MiB.
  (memory (export "memory") 18)
  (func (export "_start") (drop (call $enable_features (i32.const 2))))
  (func (export "handle_request") (result i64) (i64.const 1))
  (func (export "handle_response") (param i32 i32)
    (local $n i32) (local $r i64)
    (block $done
      (loop $l
        (local.set $r (call $read_body (i32.const 1)
          (i32.add (i32.const 65536) (local.get $n))
          (i32.sub (i32.const 1048576) (local.get $n))))
        (local.set $n (i32.add (local.get $n) (i32.wrap_i64 (local.get $r))))
        (br_if $done (i64.ne (i64.shr_u (local.get $r) (i64.const 32)) (i64.const 0)))
        (br_if $done (i64.eqz (i64.and (local.get $r) (i64.const 0xffffffff))))
        (br $l)))
    (if (local.get $n) (then (i32.store8 (i32.const 65536) (i32.const 35))))
    (call $write_body (i32.const 1) (i32.const 65536) (local.get $n))))
