;; A proxy-wasm guest whose core start section (not `_start`) calls host functions that need
;; its memory: `proxy_log` reads a message from it, `proxy_get_current_time_nanoseconds` writes
;; the time into it. `proxy_on_request_headers` answers 200 with what they did:
;; `log=<status> time=<status> written=<1 if the time arrived in memory>`.
;; One template for ABI 0.1.0, 0.2.0 and 0.2.1 (conformance/src/case.rs).
;;
;; Memory: constant strings below 128, the time at 512, the reply at 8192, host allocations
;; bump from 16384 and restart with every request.
(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_current_time_nanoseconds" (func $get_time (param i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $send_local_response (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))

  (memory (export "memory") 1)

  (data (i32.const 16) "hello from the start section") ;; 28
  (data (i32.const 64) "log=")      ;; 4
  (data (i32.const 80) " time=")    ;; 6
  (data (i32.const 96) " written=") ;; 9

  (global $log_status (mut i32) (i32.const -1))
  (global $time_status (mut i32) (i32.const -1))
  (global $heap (mut i32) (i32.const 16384))

  (func $init
    (i64.store (i32.const 512) (i64.const 0))
    ;; Level 2 is info.
    (global.set $log_status (call $log (i32.const 2) (i32.const 16) (i32.const 28)))
    (global.set $time_status (call $get_time (i32.const 512))))
  (start $init)

  (func (export "proxy_abi_version_{{abi_version}}"))

  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (if (i32.gt_u (i32.add (local.get $p) (local.get $size)) (i32.const 65536))
      (then (return (i32.const 0))))
    (global.set $heap (i32.add (local.get $p) (i32.and (i32.add (local.get $size) (i32.const 7)) (i32.const -8))))
    (local.get $p))

  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))

  ;; A status is one digit here (OK is 0); -1 (never called) shows as `/`.
  (func $digit (param $at i32) (param $v i32)
    (i32.store8 (local.get $at) (i32.add (i32.const 48) (local.get $v))))

  ;;@0.1.0 (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (result i32)
  ;;@0.2.0,0.2.1 (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (global.set $heap (i32.const 16384))
    (memory.copy (i32.const 8192) (i32.const 64) (i32.const 4))
    (call $digit (i32.const 8196) (global.get $log_status))
    (memory.copy (i32.const 8197) (i32.const 80) (i32.const 6))
    (call $digit (i32.const 8203) (global.get $time_status))
    (memory.copy (i32.const 8204) (i32.const 96) (i32.const 9))
    (call $digit (i32.const 8213) (i64.ne (i64.load (i32.const 512)) (i64.const 0)))
    (drop (call $send_local_response (i32.const 200) (i32.const 0) (i32.const 0)
      (i32.const 8192) (i32.const 22) (i32.const 0) (i32.const 0) (i32.const -1)))
    (i32.const 1))
)
