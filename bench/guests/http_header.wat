;; http-wasm: sets request header `x-bench: 1`, as the native `headers` middleware does.
(module
  (import "http_handler" "set_header_value"
    (func $set_header_value (param i32 i32 i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "x-bench")
  (data (i32.const 32) "1")
  (func (export "handle_request") (result i64)
    (call $set_header_value (i32.const 0) (i32.const 16) (i32.const 7) (i32.const 32) (i32.const 1))
    (i64.const 1))
  (func (export "handle_response") (param i32 i32)))
