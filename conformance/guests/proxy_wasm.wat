;; The proxy-wasm conformance guest, one template for ABI 0.1.0, 0.2.0 and 0.2.1: a line
;; starting with `;;@V,..` is kept only for those versions (conformance/src/case.rs).
;; The `proxy_on_request_headers` reads the
;; `x-test-id` request header and runs that test's behaviour; an absent or unknown id
;; continues. Observed values come back in a local response the guest sends itself.
;;
;; Memory: constant strings below 512, out-params at 512/516, digits at 960..1000, the
;; plugin configuration kept at 4096 (up to 1024 bytes), the reply at 8192 (OUT), host
;; allocations bump from 65536 and restart with every request.
(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get_value (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add_value (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_replace_header_map_value" (func $replace_value (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_remove_header_map_value" (func $remove_value (param i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $send_local_response (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_property" (func $get_property (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $get_buffer_bytes (param i32 i32 i32 i32 i32) (result i32)))
  ;;@0.1.0 (import "env" "proxy_get_configuration" (func $get_configuration (param i32 i32) (result i32)))
  (import "env" "proxy_define_metric" (func $define_metric (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_increment_metric" (func $increment_metric (param i32 i64) (result i32)))
  (import "env" "proxy_record_metric" (func $record_metric (param i32 i64) (result i32)))
  (import "env" "proxy_get_metric" (func $get_metric (param i32 i32) (result i32)))

  (memory (export "memory") 2)

  (data (i32.const 16) "x-test-id")         ;; 9
  (data (i32.const 32) "x-a")               ;; 3
  (data (i32.const 48) "x-added")           ;; 7
  (data (i32.const 64) "yes")               ;; 3
  (data (i32.const 80) "set")               ;; 3
  (data (i32.const 96) "denied")            ;; 6
  ;; {x-why: test}, serialized: count, (key_len, value_len), key NUL value NUL. 23 bytes.
  (data (i32.const 112) "\01\00\00\00\05\00\00\00\04\00\00\00x-why\00test\00")
  (data (i32.const 144) "request\00path")   ;; 12, segments NUL-separated
  (data (i32.const 160) "request\00method") ;; 14
  (data (i32.const 176) "no\00such\00property") ;; 16
  (data (i32.const 200) "status:")          ;; 7
  (data (i32.const 208) "x-resp")           ;; 6
  (data (i32.const 224) "x-new")            ;; 5
  (data (i32.const 240) "v")                ;; 1
  (data (i32.const 256) "pw says trace")    ;; 13
  (data (i32.const 272) "pw says debug")    ;; 13
  (data (i32.const 288) "pw says info")     ;; 12
  (data (i32.const 304) "pw says warn")     ;; 12
  (data (i32.const 320) "pw says error")    ;; 13
  (data (i32.const 336) "pw says critical") ;; 16
  (data (i32.const 352) "pw says on_log")   ;; 14
  (data (i32.const 368) "pw_metric_counter") ;; 17
  (data (i32.const 400) "pw_metric_gauge")  ;; 15

  (global $id (mut i32) (i32.const 0))
  (global $out (mut i32) (i32.const 0))
  (global $heap (mut i32) (i32.const 65536))
  (global $cfg_len (mut i32) (i32.const 0))

  (func (export "proxy_abi_version_{{abi_version}}"))

  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (if (i32.gt_u (i32.add (local.get $p) (local.get $size)) (i32.const 131072))
      (then (return (i32.const 0))))
    (global.set $heap (i32.add (local.get $p) (i32.and (i32.add (local.get $size) (i32.const 7)) (i32.const -8))))
    (local.get $p))

  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))

  ;; Keeps the plugin configuration for test 8 (0.1.0 has no configuration buffers).
  (func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
    ;;@0.1.0 (if (i32.eqz (call $get_configuration (i32.const 512) (i32.const 516)))
    ;;@0.2.0,0.2.1 (if (i32.eqz (call $get_buffer_bytes (i32.const 7) (i32.const 0) (local.get $size) (i32.const 512) (i32.const 516)))
      (then
        (global.set $cfg_len (i32.load (i32.const 516)))
        (if (i32.gt_u (global.get $cfg_len) (i32.const 1024)) (then (global.set $cfg_len (i32.const 1024))))
        (memory.copy (i32.const 4096) (i32.load (i32.const 512)) (global.get $cfg_len))))
    (i32.const 1))

  (func $emit (param $p i32) (param $n i32)
    (memory.copy (i32.add (i32.const 8192) (global.get $out)) (local.get $p) (local.get $n))
    (global.set $out (i32.add (global.get $out) (local.get $n))))

  (func $emit_num (param $v i32)
    (local $p i32)
    (local.set $p (i32.const 1000))
    (loop $l
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p) (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10))))
      (local.set $v (i32.div_u (local.get $v) (i32.const 10)))
      (br_if $l (local.get $v)))
    (call $emit (local.get $p) (i32.sub (i32.const 1000) (local.get $p))))

  ;; Answers 200 with the assembled reply; the stream stops here.
  (func $reply (result i32)
    (drop (call $send_local_response (i32.const 200) (i32.const 0) (i32.const 0)
      (i32.const 8192) (global.get $out) (i32.const 0) (i32.const 0) (i32.const -1)))
    (i32.const 1))

  ;; The host-allocated result in the out-params, or `status:N`.
  (func $reply_result (param $status i32) (result i32)
    (if (i32.eqz (local.get $status))
      (then (call $emit (i32.load (i32.const 512)) (i32.load (i32.const 516))))
      (else
        (call $emit (i32.const 200) (i32.const 7))
        (call $emit_num (local.get $status))))
    (call $reply))

  ;; The value of the metric whose id is at 520, or `status:N`.
  (func $reply_metric (result i32)
    (local $status i32)
    (local.set $status (call $get_metric (i32.load (i32.const 520)) (i32.const 528)))
    (if (i32.eqz (local.get $status))
      (then (call $emit_num (i32.load (i32.const 528))))
      (else
        (call $emit (i32.const 200) (i32.const 7))
        (call $emit_num (local.get $status))))
    (call $reply))

  (func $read_test_id (result i32)
    (local $p i32) (local $n i32) (local $i i32) (local $b i32) (local $v i32)
    (if (call $get_value (i32.const 0) (i32.const 16) (i32.const 9) (i32.const 512) (i32.const 516))
      (then (return (i32.const 0))))
    (local.set $p (i32.load (i32.const 512)))
    (local.set $n (i32.load (i32.const 516)))
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $b (i32.load8_u (i32.add (local.get $p) (local.get $i))))
        (br_if $done (i32.lt_u (local.get $b) (i32.const 48)))
        (br_if $done (i32.gt_u (local.get $b) (i32.const 57)))
        (local.set $v (i32.add (i32.mul (local.get $v) (i32.const 10)) (i32.sub (local.get $b) (i32.const 48))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    (local.get $v))

  ;;@0.1.0 (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (result i32)
  ;;@0.2.0,0.2.1 (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (local $t i32)
    (global.set $heap (i32.const 65536))
    (global.set $out (i32.const 0))
    (global.set $id (call $read_test_id))
    (local.set $t (global.get $id))
    (if (i32.eq (local.get $t) (i32.const 1)) (then
      (return (call $reply_result
        (call $get_value (i32.const 0) (i32.const 32) (i32.const 3) (i32.const 512) (i32.const 516))))))
    (if (i32.eq (local.get $t) (i32.const 2)) (then
      (drop (call $add_value (i32.const 0) (i32.const 48) (i32.const 7) (i32.const 64) (i32.const 3)))
      (return (i32.const 0))))
    (if (i32.eq (local.get $t) (i32.const 3)) (then
      (drop (call $replace_value (i32.const 0) (i32.const 32) (i32.const 3) (i32.const 80) (i32.const 3)))
      (return (i32.const 0))))
    (if (i32.eq (local.get $t) (i32.const 4)) (then
      (drop (call $remove_value (i32.const 0) (i32.const 32) (i32.const 3)))
      (return (i32.const 0))))
    (if (i32.eq (local.get $t) (i32.const 5)) (then
      (drop (call $send_local_response (i32.const 403) (i32.const 0) (i32.const 0)
        (i32.const 96) (i32.const 6) (i32.const 112) (i32.const 23) (i32.const -1)))
      (return (i32.const 1))))
    (if (i32.eq (local.get $t) (i32.const 6)) (then
      (return (call $reply_result
        (call $get_property (i32.const 144) (i32.const 12) (i32.const 512) (i32.const 516))))))
    (if (i32.eq (local.get $t) (i32.const 7)) (then
      (return (call $reply_result
        (call $get_property (i32.const 160) (i32.const 14) (i32.const 512) (i32.const 516))))))
    (if (i32.eq (local.get $t) (i32.const 8)) (then
      (call $emit (i32.const 4096) (global.get $cfg_len))
      (return (call $reply))))
    (if (i32.eq (local.get $t) (i32.const 9)) (then
      (call $emit_num (call $log (i32.const 6) (i32.const 64) (i32.const 3)))
      (return (call $reply))))
    (if (i32.eq (local.get $t) (i32.const 11)) (then
      unreachable))
    (if (i32.eq (local.get $t) (i32.const 12)) (then
      (return (call $reply_result
        (call $get_property (i32.const 176) (i32.const 16) (i32.const 512) (i32.const 516))))))
    (if (i32.eq (local.get $t) (i32.const 13)) (then
      (return (call $reply_result
        (call $get_value (i32.const 9) (i32.const 32) (i32.const 3) (i32.const 512) (i32.const 516))))))
    (if (i32.eq (local.get $t) (i32.const 14)) (then
      (drop (call $replace_value (i32.const 0) (i32.const 224) (i32.const 5) (i32.const 240) (i32.const 1)))
      (return (i32.const 0))))
    ;; -- logs (on_log adds one after the response) and metrics; ids spaced out from 14 --
    (if (i32.eq (local.get $t) (i32.const 40)) (then
      (drop (call $log (i32.const 0) (i32.const 256) (i32.const 13)))
      (drop (call $log (i32.const 1) (i32.const 272) (i32.const 13)))
      (drop (call $log (i32.const 2) (i32.const 288) (i32.const 12)))
      (drop (call $log (i32.const 3) (i32.const 304) (i32.const 12)))
      (drop (call $log (i32.const 4) (i32.const 320) (i32.const 13)))
      (drop (call $log (i32.const 5) (i32.const 336) (i32.const 16)))
      (call $emit (i32.const 64) (i32.const 3))
      (return (call $reply))))
    ;; A counter: defined, incremented by 3 and by 4; replies with proxy_get_metric.
    (if (i32.eq (local.get $t) (i32.const 41)) (then
      (drop (call $define_metric (i32.const 0) (i32.const 368) (i32.const 17) (i32.const 520)))
      (drop (call $increment_metric (i32.load (i32.const 520)) (i64.const 3)))
      (drop (call $increment_metric (i32.load (i32.const 520)) (i64.const 4)))
      (return (call $reply_metric))))
    ;; A gauge: defined, set to 42, moved by -2; replies with proxy_get_metric.
    (if (i32.eq (local.get $t) (i32.const 42)) (then
      (drop (call $define_metric (i32.const 1) (i32.const 400) (i32.const 15) (i32.const 520)))
      (drop (call $record_metric (i32.load (i32.const 520)) (i64.const 42)))
      (drop (call $increment_metric (i32.load (i32.const 520)) (i64.const -2)))
      (return (call $reply_metric))))
    (i32.const 0))

  ;; Runs after the response has gone out.
  (func (export "proxy_on_log") (param $ctx i32)
    (if (i32.eq (global.get $id) (i32.const 40)) (then
      (drop (call $log (i32.const 2) (i32.const 352) (i32.const 14))))))

  ;;@0.1.0 (func (export "proxy_on_response_headers") (param $ctx i32) (param $n i32) (result i32)
  ;;@0.2.0,0.2.1 (func (export "proxy_on_response_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (if (i32.eq (global.get $id) (i32.const 10)) (then
      (drop (call $add_value (i32.const 2) (i32.const 208) (i32.const 6) (i32.const 64) (i32.const 3)))))
    (i32.const 0))
)
