;; An http-wasm guest whose exported `_start` (not the core start section) calls host
;; functions, as TinyGo guests do from `main`: it enables buffer_response and keeps what
;; get_config returned; when the configuration's first key starts with `exit` it then calls
;; WASI `proc_exit(0)`, as TinyGo 0.35 does after `main` (success: the instance is kept); when
;; it starts with `trap`, `_start` traps (a guest whose `main` panics).
;; `handle_response` replaces next's response (only buffer_response allows it) with a 201 and
;; the body `features=<what enable_features returned> config=<the configuration>`.
;;
;; Memory: constant strings below 64, the configuration at 1024 (up to 1024 bytes), the reply
;; at 4096.
(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "http_handler" "enable_features" (func $enable_features (param i32) (result i32)))
  (import "http_handler" "get_config" (func $get_config (param i32 i32) (result i32)))
  (import "http_handler" "set_status_code" (func $set_status_code (param i32)))
  (import "http_handler" "write_body" (func $write_body (param i32 i32 i32)))

  (memory (export "memory") 1)

  (data (i32.const 16) "features=") ;; 9
  (data (i32.const 32) " config=")  ;; 8

  (global $features (mut i32) (i32.const -1))
  (global $cfg_len (mut i32) (i32.const -1))

  (func (export "_start")
    (global.set $features (call $enable_features (i32.const 2)))
    (global.set $cfg_len (call $get_config (i32.const 1024) (i32.const 1024)))
    ;; {"exit...: the configuration asks for proc_exit(0).
    (if (i32.and (i32.ge_u (global.get $cfg_len) (i32.const 6))
          (i32.eq (i32.load (i32.const 1026)) (i32.const 0x74697865))) ;; "exit" little-endian
      (then (call $proc_exit (i32.const 0))))
    ;; {"trap...: `_start` fails.
    (if (i32.and (i32.ge_u (global.get $cfg_len) (i32.const 6))
          (i32.eq (i32.load (i32.const 1026)) (i32.const 0x70617274))) ;; "trap" little-endian
      (then unreachable)))

  (func (export "handle_request") (result i64) (i64.const 1))

  (func (export "handle_response") (param $ctx i32) (param $is_error i32)
    (local $n i32)
    (local.set $n (global.get $cfg_len))
    (if (i32.gt_u (local.get $n) (i32.const 1024)) (then (local.set $n (i32.const 0))))
    (memory.copy (i32.const 4096) (i32.const 16) (i32.const 9))
    ;; enable_features returns the enabled set, at most 7: one digit.
    (i32.store8 (i32.const 4105) (i32.add (i32.const 48) (i32.and (global.get $features) (i32.const 7))))
    (memory.copy (i32.const 4106) (i32.const 32) (i32.const 8))
    (memory.copy (i32.const 4114) (i32.const 1024) (local.get $n))
    (call $set_status_code (i32.const 201))
    (call $write_body (i32.const 1) (i32.const 4096) (i32.add (i32.const 18) (local.get $n))))
)
