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

  (import "env" "proxy_get_header_map_pairs" (func $get_pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_set_header_map_pairs" (func $set_pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_size" (func $get_map_size (param i32 i32) (result i32)))
  (import "env" "proxy_set_buffer_bytes" (func $set_buffer_bytes (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_status" (func $get_buffer_status (param i32 i32 i32) (result i32)))
  (import "env" "proxy_set_property" (func $set_property (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_current_time_nanoseconds" (func $get_time (param i32) (result i32)))
  ;;@0.1.0 (import "env" "proxy_clear_route_cache" (func $clear_route_cache (result i32)))
  ;;@0.2.0,0.2.1 (import "env" "proxy_close_stream" (func $close_stream (param i32) (result i32)))
  ;;@0.2.1 (import "env" "proxy_get_log_level" (func $get_log_level (param i32) (result i32)))
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

  ;; Stream-feature constants (test ids 100..199), 1024..2047.
  (data (i32.const 1024) ":status")         ;; 7
  (data (i32.const 1040) "x-upstream")      ;; 10
  (data (i32.const 1056) "202")             ;; 3
  (data (i32.const 1072) "x-prop")          ;; 6
  (data (i32.const 1088) "pre-")            ;; 4
  (data (i32.const 1096) "-post")           ;; 5
  (data (i32.const 1104) "rewritten")       ;; 9
  (data (i32.const 1120) "same")            ;; 4
  (data (i32.const 1128) "differ")          ;; 6
  (data (i32.const 1136) "on_done ctx=")    ;; 12
  (data (i32.const 1152) "on_log ctx=")     ;; 11
  (data (i32.const 1168) "on_delete ctx=")  ;; 14
  (data (i32.const 1184) " test=")          ;; 6
  (data (i32.const 1200) "new body")        ;; 8
  (data (i32.const 1216) "|")               ;; 1
  (data (i32.const 1220) ":")               ;; 1
  (data (i32.const 1224) ",")               ;; 1
  (data (i32.const 1232) "x-absent")        ;; 8
  (data (i32.const 1248) "resp:")           ;; 5
  (data (i32.const 1264) "wasmgate\00test") ;; 13
  (data (i32.const 1280) "response\00code") ;; 13
  (data (i32.const 1296) "plausible")       ;; 9
  (data (i32.const 1312) "x-t")             ;; 3
  (data (i32.const 1328) "Hello, world")    ;; 12

  (global $id (mut i32) (i32.const 0))
  (global $out (mut i32) (i32.const 0))
  ;; Streams this instance has run: it lives as long as the instance (test 44).
  (global $served (mut i32) (i32.const 0))
  (global $heap (mut i32) (i32.const 65536))
  (global $cfg_len (mut i32) (i32.const 0))
  (global $sizes (mut i32) (i32.const 0))
  (global $body_eos (mut i32) (i32.const -1))

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
    (global.set $served (i32.add (global.get $served) (i32.const 1)))
    (global.set $sizes (i32.const 0))
    (global.set $body_eos (i32.const -1))
    (local.set $t (global.get $id))
    (if (i32.ge_u (local.get $t) (i32.const 100)) (then
      (local.set $t (call $dispatch_stream))
      (if (i32.ge_s (local.get $t) (i32.const 0)) (then (return (local.get $t))))
      (return (i32.const 0))))
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
;; Instance reuse: the stream's context id (new for every stream), then how many streams
    ;; this instance has run.
    (if (i32.eq (local.get $t) (i32.const 43)) (then
      (call $emit_num (local.get $ctx))
      (return (call $reply))))
    (if (i32.eq (local.get $t) (i32.const 44)) (then
      (call $emit_num (global.get $served))
      (return (call $reply))))
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
  ;;@0.1.0 (func (export "proxy_on_response_headers") (param $ctx i32) (param $n i32) (result i32)
  ;;@0.2.0,0.2.1 (func (export "proxy_on_response_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (local $r i32)
    (if (i32.ge_u (global.get $id) (i32.const 100)) (then
      (local.set $r (call $stream_response_headers))
      (if (i32.ge_s (local.get $r) (i32.const 0)) (then (return (local.get $r))))
      (return (i32.const 0))))
    (if (i32.eq (global.get $id) (i32.const 10)) (then
      (drop (call $add_value (i32.const 2) (i32.const 208) (i32.const 6) (i32.const 64) (i32.const 3)))))
    (i32.const 0))

  ;; ---- Stream features: test ids 100..199 ----
  ;; Out-of-range pointer used by the INVALID_MEMORY_ACCESS tests: far past linear memory.
  (global $bad i32 (i32.const 0x10000000))

  (func $emit_byte (param $b i32)
    (i32.store8 (i32.add (i32.const 8192) (global.get $out)) (local.get $b))
    (global.set $out (i32.add (global.get $out) (i32.const 1))))

  (func $emit_status (param $s i32)
    (call $emit (i32.const 200) (i32.const 7))
    (call $emit_num (local.get $s)))

  ;; A serialized map as `count|key,value,...` (each NUL shown as `,`); `0|` when empty.
  (func $emit_map (param $p i32) (param $n i32)
    (local $c i32) (local $i i32) (local $b i32)
    (if (i32.ge_u (local.get $n) (i32.const 4))
      (then (local.set $c (i32.load (local.get $p)))))
    (call $emit_num (local.get $c))
    (call $emit (i32.const 1216) (i32.const 1))
    (if (i32.lt_u (local.get $n) (i32.const 4)) (then (return)))
    (local.set $i (i32.add (i32.const 4) (i32.mul (local.get $c) (i32.const 8))))
    (block $d (loop $l
      (br_if $d (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $b (i32.load8_u (i32.add (local.get $p) (local.get $i))))
      (if (i32.eqz (local.get $b)) (then (local.set $b (i32.const 44))))
      (call $emit_byte (local.get $b))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l))))

  ;; The status as a number (`0` for OK).
  (func $reply_status (param $s i32) (result i32)
    (call $emit_num (local.get $s))
    (call $reply))

  ;; The host-allocated map in the out-params as `count|k,v,`, or `status:N`.
  (func $reply_map (param $s i32) (result i32)
    (if (i32.eqz (local.get $s))
      (then (call $emit_map (i32.load (i32.const 512)) (i32.load (i32.const 516))))
      (else (call $emit_status (local.get $s))))
    (call $reply))

  ;; The u32 out-param at 520, or `status:N`.
  (func $reply_u32 (param $s i32) (result i32)
    (if (i32.eqz (local.get $s))
      (then (call $emit_num (i32.load (i32.const 520))))
      (else (call $emit_status (local.get $s))))
    (call $reply))

  ;; A numeric property as `length:value` (low 32 bits of the LE integer), or `status:N`.
  (func $reply_num (param $s i32) (result i32)
    (if (i32.eqz (local.get $s))
      (then
        (call $emit_num (i32.load (i32.const 516)))
        (call $emit (i32.const 1220) (i32.const 1))
        (call $emit_num (i32.load (i32.load (i32.const 512)))))
      (else (call $emit_status (local.get $s))))
    (call $reply))

  ;; `same` when the map size equals the length of the serialized pairs, else `differ`.
  (func $reply_size_check (param $map i32) (result i32)
    (local $s i32)
    (local.set $s (call $get_map_size (local.get $map) (i32.const 520)))
    (if (local.get $s) (then (return (call $reply_u32 (local.get $s)))))
    (local.set $s (call $get_pairs (local.get $map) (i32.const 512) (i32.const 516)))
    (if (local.get $s) (then (return (call $reply_map (local.get $s)))))
    (if (i32.eq (i32.load (i32.const 516)) (i32.load (i32.const 520)))
      (then (call $emit (i32.const 1120) (i32.const 4)))
      (else (call $emit (i32.const 1128) (i32.const 6))))
    (call $reply))

  ;; The `x-a` request header, its pointer at 528 and length at 532 (0/0 when absent).
  (func $xa
    (i32.store (i32.const 528) (i32.const 0))
    (i32.store (i32.const 532) (i32.const 0))
    (drop (call $get_value (i32.const 0) (i32.const 32) (i32.const 3) (i32.const 528) (i32.const 532))))

  ;; `x-a` as a property path at 3072: `.` becomes the NUL segment separator. Returns its length.
  (func $xa_path (result i32)
    (local $p i32) (local $n i32) (local $i i32) (local $b i32)
    (call $xa)
    (local.set $p (i32.load (i32.const 528)))
    (local.set $n (i32.load (i32.const 532)))
    (if (i32.gt_u (local.get $n) (i32.const 900)) (then (local.set $n (i32.const 900))))
    (block $d (loop $l
      (br_if $d (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $b (i32.load8_u (i32.add (local.get $p) (local.get $i))))
      (if (i32.eq (local.get $b) (i32.const 46)) (then (local.set $b (i32.const 0))))
      (i32.store8 (i32.add (i32.const 3072) (local.get $i)) (local.get $b))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l)))
    (local.get $n))

  ;; Request headers, ids >= 100: an action, or -1 to go on with the stream (later phases).
  (func $dispatch_stream (result i32)
    (local $t i32) (local $n i32)
    (local.set $t (global.get $id))
    ;; Header maps.
    (if (i32.eq (local.get $t) (i32.const 100)) (then
      (return (call $reply_map (call $get_pairs (i32.const 0) (i32.const 512) (i32.const 516))))))
    (if (i32.eq (local.get $t) (i32.const 101)) (then
      (return (call $reply_map (call $get_pairs (i32.const 2) (i32.const 512) (i32.const 516))))))
    (if (i32.eq (local.get $t) (i32.const 102)) (then
      (return (call $reply_status (call $get_pairs (i32.const 99) (i32.const 512) (i32.const 516))))))
    (if (i32.eq (local.get $t) (i32.const 103)) (then
      (return (call $reply_status (call $get_pairs (i32.const 0) (global.get $bad) (i32.const 516))))))
    (if (i32.eq (local.get $t) (i32.const 104)) (then
      (return (call $reply_size_check (i32.const 0)))))
    (if (i32.eq (local.get $t) (i32.const 105)) (then
      (return (call $reply_status (call $get_map_size (i32.const 99) (i32.const 520))))))
    (if (i32.eq (local.get $t) (i32.const 106)) (then
      (return (call $reply_status (call $get_map_size (i32.const 0) (global.get $bad))))))
    (if (i32.eq (local.get $t) (i32.const 107)) (then
      (return (call $reply_status (call $add_value (i32.const 99) (i32.const 48) (i32.const 7) (i32.const 64) (i32.const 3))))))
    (if (i32.eq (local.get $t) (i32.const 108)) (then
      (return (call $reply_status (call $add_value (i32.const 2) (i32.const 48) (i32.const 7) (i32.const 64) (i32.const 3))))))
    (if (i32.eq (local.get $t) (i32.const 109)) (then
      (return (call $reply_status (call $replace_value (i32.const 99) (i32.const 48) (i32.const 7) (i32.const 64) (i32.const 3))))))
    (if (i32.eq (local.get $t) (i32.const 110)) (then
      (return (call $reply_status (call $remove_value (i32.const 99) (i32.const 32) (i32.const 3))))))
    (if (i32.eq (local.get $t) (i32.const 111)) (then
      (return (call $reply_status (call $get_value (i32.const 0) (global.get $bad) (i32.const 3) (i32.const 512) (i32.const 516))))))
    (if (i32.eq (local.get $t) (i32.const 112)) (then
      (return (call $reply_status (call $add_value (i32.const 0) (global.get $bad) (i32.const 3) (i32.const 64) (i32.const 3))))))
    (if (i32.eq (local.get $t) (i32.const 113)) (then
      (return (call $reply_status (call $remove_value (i32.const 0) (i32.const 1232) (i32.const 8))))))
    (if (i32.eq (local.get $t) (i32.const 114)) (then
      (call $xa)
      (return (call $reply_result (call $get_value (i32.const 0)
        (i32.load (i32.const 528)) (i32.load (i32.const 532)) (i32.const 512) (i32.const 516))))))
    (if (i32.eq (local.get $t) (i32.const 115)) (then
      (return (call $reply_status (call $set_pairs (i32.const 0) (global.get $bad) (i32.const 23))))))
    (if (i32.eq (local.get $t) (i32.const 116)) (then
      (return (call $reply_status (call $set_pairs (i32.const 99) (i32.const 112) (i32.const 23))))))
    (if (i32.eq (local.get $t) (i32.const 117)) (then
      (return (call $reply_status (call $set_pairs (i32.const 2) (i32.const 112) (i32.const 23))))))
    (if (i32.eq (local.get $t) (i32.const 118)) (then
      (return (call $reply_map (call $get_pairs (i32.const 1) (i32.const 512) (i32.const 516))))))
    (if (i32.eq (local.get $t) (i32.const 119)) (then
      (return (call $reply_status (call $replace_value (i32.const 0) (i32.const 48) (i32.const 7) (global.get $bad) (i32.const 3))))))
    ;; Properties: the path comes from `x-a` with `.` between segments.
    (if (i32.eq (local.get $t) (i32.const 120)) (then
      (local.set $n (call $xa_path))
      (return (call $reply_result (call $get_property (i32.const 3072) (local.get $n) (i32.const 512) (i32.const 516))))))
    (if (i32.eq (local.get $t) (i32.const 121)) (then
      (local.set $n (call $xa_path))
      (return (call $reply_num (call $get_property (i32.const 3072) (local.get $n) (i32.const 512) (i32.const 516))))))
    (if (i32.eq (local.get $t) (i32.const 122)) (then
      (local.set $n (call $xa_path))
      (return (call $reply_map (call $get_property (i32.const 3072) (local.get $n) (i32.const 512) (i32.const 516))))))
    (if (i32.eq (local.get $t) (i32.const 123)) (then
      (local.set $n (call $xa_path))
      (local.set $n (call $set_property (i32.const 3072) (local.get $n) (i32.const 64) (i32.const 3)))
      (if (local.get $n) (then (return (call $reply_status (local.get $n)))))
      (local.set $n (call $xa_path))
      (return (call $reply_result (call $get_property (i32.const 3072) (local.get $n) (i32.const 512) (i32.const 516))))))
    (if (i32.eq (local.get $t) (i32.const 124)) (then
      (drop (call $set_property (i32.const 1264) (i32.const 13) (i32.const 64) (i32.const 3)))
      (return (i32.const 0))))
    (if (i32.eq (local.get $t) (i32.const 125)) (then
      (return (call $reply_status (call $get_property (global.get $bad) (i32.const 5) (i32.const 512) (i32.const 516))))))
    (if (i32.eq (local.get $t) (i32.const 126)) (then
      (return (call $reply_status (call $set_property (i32.const 1264) (i32.const 13) (global.get $bad) (i32.const 3))))))
    (if (i32.eq (local.get $t) (i32.const 127)) (then
      (local.set $n (call $xa_path))
      (return (call $reply_status (call $get_property (i32.const 3072) (local.get $n) (global.get $bad) (i32.const 516))))))
    ;; Log, time, configuration, route cache.
    (if (i32.eq (local.get $t) (i32.const 130)) (then
      (loop $l
        (call $emit_num (call $log (local.get $n) (i32.const 64) (i32.const 3)))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br_if $l (i32.le_u (local.get $n) (i32.const 5))))
      (return (call $reply))))
    (if (i32.eq (local.get $t) (i32.const 131)) (then
      (return (call $reply_status (call $log (i32.const 2) (global.get $bad) (i32.const 3))))))
    ;;@0.2.1 (if (i32.eq (local.get $t) (i32.const 132)) (then (return (call $reply_u32 (call $get_log_level (i32.const 520))))))
    ;;@0.2.1 (if (i32.eq (local.get $t) (i32.const 133)) (then (return (call $reply_status (call $get_log_level (global.get $bad))))))
    (if (i32.eq (local.get $t) (i32.const 134)) (then
      (local.set $n (call $get_time (i32.const 536)))
      (if (local.get $n) (then (return (call $reply_status (local.get $n)))))
      ;; After 2020-01-01 and before 2100-01-01.
      (if (i32.and
            (i64.gt_u (i64.load (i32.const 536)) (i64.const 1577836800000000000))
            (i64.lt_u (i64.load (i32.const 536)) (i64.const 4102444800000000000)))
        (then (call $emit (i32.const 1296) (i32.const 9)))
        (else (call $emit (i32.const 1128) (i32.const 6))))
      (return (call $reply))))
    (if (i32.eq (local.get $t) (i32.const 135)) (then
      (return (call $reply_status (call $get_time (global.get $bad))))))
    ;;@0.1.0 (if (i32.eq (local.get $t) (i32.const 136)) (then (return (call $reply_result (call $get_configuration (i32.const 512) (i32.const 516))))))
    ;;@0.1.0 (if (i32.eq (local.get $t) (i32.const 137)) (then (return (call $reply_status (call $get_configuration (global.get $bad) (i32.const 516))))))
    ;;@0.1.0 (if (i32.eq (local.get $t) (i32.const 138)) (then (return (call $reply_status (call $clear_route_cache)))))
    ;; Buffers seen from the request headers.
    (if (i32.eq (local.get $t) (i32.const 140)) (then
      (return (call $reply_status (call $get_buffer_bytes (i32.const 0) (i32.const 0) (i32.const 100) (i32.const 512) (i32.const 516))))))
    (if (i32.eq (local.get $t) (i32.const 141)) (then
      (return (call $reply_status (call $get_buffer_bytes (i32.const 99) (i32.const 0) (i32.const 100) (i32.const 512) (i32.const 516))))))
    (if (i32.eq (local.get $t) (i32.const 142)) (then
      (return (call $reply_status (call $get_buffer_status (i32.const 99) (i32.const 520) (i32.const 524))))))
    (if (i32.eq (local.get $t) (i32.const 143)) (then
      (return (call $reply_status (call $set_buffer_bytes (i32.const 99) (i32.const 0) (i32.const 0) (i32.const 64) (i32.const 3))))))
    (if (i32.eq (local.get $t) (i32.const 144)) (then
      (return (call $reply_status (call $set_buffer_bytes (i32.const 7) (i32.const 0) (i32.const 0) (i32.const 64) (i32.const 3))))))
    ;; Stream control and local responses.
    ;;@0.2.0,0.2.1 (if (i32.eq (local.get $t) (i32.const 146)) (then (drop (call $close_stream (i32.const 0))) (return (i32.const 1))))
    ;;@0.2.0,0.2.1 (if (i32.eq (local.get $t) (i32.const 147)) (then (return (call $reply_status (call $close_stream (i32.const 99))))))
    (if (i32.eq (local.get $t) (i32.const 148)) (then
      (return (call $reply_status (call $send_local_response (i32.const 403) (i32.const 0) (i32.const 0)
        (global.get $bad) (i32.const 6) (i32.const 0) (i32.const 0) (i32.const -1))))))
    (if (i32.eq (local.get $t) (i32.const 149)) (then
      (return (call $reply_status (call $send_local_response (i32.const 403) (i32.const 0) (i32.const 0)
        (i32.const 96) (i32.const 6) (global.get $bad) (i32.const 23) (i32.const -1))))))
    (i32.const -1))

  ;; Request body, ids >= 100 (`-1`: not handled).
  (func $stream_request_body (param $size i32) (param $eos i32) (result i32)
    (local $t i32)
    (local.set $t (global.get $id))
    (global.set $sizes (i32.add (global.get $sizes) (local.get $size)))
    (global.set $body_eos (local.get $eos))
    (if (i32.eq (local.get $t) (i32.const 164)) (then
      (if (i32.eqz (local.get $eos)) (then (return (i32.const 0))))
      (call $emit_num (global.get $sizes))
      (return (call $reply))))
    ;; Traces every call as `size:eos,` and answers with the trace at the end of the stream.
    (if (i32.eq (local.get $t) (i32.const 167)) (then
      (call $emit_num (local.get $size))
      (call $emit (i32.const 1220) (i32.const 1))
      (call $emit_num (local.get $eos))
      (call $emit (i32.const 1224) (i32.const 1))
      (if (i32.eqz (local.get $eos)) (then (return (i32.const 0))))
      (return (call $reply))))
    ;; Reads the buffer in the end-of-stream call, whatever its size: `status,size`.
    (if (i32.eq (local.get $t) (i32.const 145)) (then
      (if (i32.eqz (local.get $eos)) (then (return (i32.const 0))))
      (i32.store (i32.const 516) (i32.const 0))
      (call $emit_num (call $get_buffer_bytes (i32.const 0) (i32.const 0) (local.get $size) (i32.const 512) (i32.const 516)))
      (call $emit (i32.const 1224) (i32.const 1))
      (call $emit_num (i32.load (i32.const 516)))
      (return (call $reply))))
    ;; Envoy's example filter on the request side: see test 187.
    (if (i32.eq (local.get $t) (i32.const 169)) (then
      (drop (call $set_buffer_bytes (i32.const 0) (i32.const 0) (i32.const 12) (i32.const 1328) (i32.const 12)))
      (return (i32.const 0))))
    ;; Every other body test buffers until the end of the stream.
    (if (i32.eqz (local.get $eos)) (then (return (i32.const 1))))
    ;; Envoy's copyFrom at start 0: drain 4 bytes, then prepend `pre-`.
    (if (i32.eq (local.get $t) (i32.const 168)) (then
      (local.set $t (call $set_buffer_bytes (i32.const 0) (i32.const 0) (i32.const 4) (i32.const 1088) (i32.const 4)))
      (if (local.get $t) (then (return (call $reply_status (local.get $t)))))
      (return (i32.const 0))))
    (if (i32.eq (local.get $t) (i32.const 150)) (then
      (return (call $reply_result (call $get_buffer_bytes (i32.const 0) (i32.const 0) (local.get $size) (i32.const 512) (i32.const 516))))))
    (if (i32.eq (local.get $t) (i32.const 151)) (then
      (drop (call $set_buffer_bytes (i32.const 0) (i32.const 0) (local.get $size) (i32.const 1200) (i32.const 8)))
      (return (i32.const 0))))
    (if (i32.eq (local.get $t) (i32.const 152)) (then
      (return (call $reply_result (call $get_buffer_bytes (i32.const 0) (i32.const 2) (i32.const 3) (i32.const 512) (i32.const 516))))))
    (if (i32.eq (local.get $t) (i32.const 153)) (then
      (return (call $reply_result (call $get_buffer_bytes (i32.const 0) (i32.const 100) (i32.const 5) (i32.const 512) (i32.const 516))))))
    (if (i32.eq (local.get $t) (i32.const 154)) (then
      (return (call $reply_status (call $get_buffer_bytes (i32.const 0) (i32.const 1) (i32.const -1) (i32.const 512) (i32.const 516))))))
    (if (i32.eq (local.get $t) (i32.const 155)) (then
      (local.set $t (call $get_buffer_status (i32.const 0) (i32.const 520) (i32.const 524)))
      (if (local.get $t) (then (return (call $reply_status (local.get $t)))))
      (call $emit_num (i32.load (i32.const 520)))
      (call $emit (i32.const 1224) (i32.const 1))
      (call $emit_num (i32.load (i32.const 524)))
      (call $emit (i32.const 1224) (i32.const 1))
      (call $emit_num (local.get $size))
      (return (call $reply))))
    (if (i32.eq (local.get $t) (i32.const 156)) (then
      (drop (call $set_buffer_bytes (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1088) (i32.const 4)))
      (return (i32.const 0))))
    (if (i32.eq (local.get $t) (i32.const 157)) (then
      (drop (call $set_buffer_bytes (i32.const 0) (i32.const -1) (i32.const 0) (i32.const 1096) (i32.const 5)))
      (return (i32.const 0))))
    (if (i32.eq (local.get $t) (i32.const 158)) (then
      (return (call $reply_status (call $set_buffer_bytes (i32.const 0) (i32.const 2) (i32.const 1) (i32.const 240) (i32.const 1))))))
    (if (i32.eq (local.get $t) (i32.const 159)) (then
      (return (call $reply_status (call $get_buffer_bytes (i32.const 1) (i32.const 0) (i32.const 10) (i32.const 512) (i32.const 516))))))
    (if (i32.eq (local.get $t) (i32.const 160)) (then
      (return (call $reply_status (call $get_buffer_bytes (i32.const 0) (i32.const 0) (i32.const 10) (global.get $bad) (i32.const 516))))))
    (if (i32.eq (local.get $t) (i32.const 161)) (then
      (return (call $reply_status (call $set_buffer_bytes (i32.const 0) (i32.const 0) (i32.const 0) (global.get $bad) (i32.const 3))))))
    (if (i32.eq (local.get $t) (i32.const 162)) (then
      (drop (call $send_local_response (i32.const 403) (i32.const 0) (i32.const 0)
        (i32.const 96) (i32.const 6) (i32.const 112) (i32.const 23) (i32.const -1)))
      (return (i32.const 1))))
    ;;@0.2.0,0.2.1 (if (i32.eq (local.get $t) (i32.const 163)) (then (drop (call $close_stream (i32.const 0))) (return (i32.const 1))))
    (if (i32.eq (local.get $t) (i32.const 165)) (then
      (return (call $reply_status (call $get_buffer_status (i32.const 0) (global.get $bad) (i32.const 524))))))
    (if (i32.eq (local.get $t) (i32.const 166)) (then
      (return (call $reply_result (call $get_value (i32.const 0) (i32.const 32) (i32.const 3) (i32.const 512) (i32.const 516))))))
    (i32.const -1))

  ;; Response headers, ids >= 100 (`-1`: not handled).
  (func $stream_response_headers (result i32)
    (local $t i32)
    (local.set $t (global.get $id))
    (if (i32.eq (local.get $t) (i32.const 124)) (then
      (if (i32.eqz (call $get_property (i32.const 1264) (i32.const 13) (i32.const 512) (i32.const 516)))
        (then (drop (call $add_value (i32.const 2) (i32.const 1072) (i32.const 6)
          (i32.load (i32.const 512)) (i32.load (i32.const 516))))))
      (return (i32.const 0))))
    (if (i32.eq (local.get $t) (i32.const 170)) (then
      (return (call $reply_result (call $get_value (i32.const 2) (i32.const 1024) (i32.const 7) (i32.const 512) (i32.const 516))))))
    (if (i32.eq (local.get $t) (i32.const 171)) (then
      (return (call $reply_map (call $get_pairs (i32.const 2) (i32.const 512) (i32.const 516))))))
    (if (i32.eq (local.get $t) (i32.const 172)) (then
      (drop (call $set_pairs (i32.const 2) (i32.const 112) (i32.const 23)))
      (return (i32.const 0))))
    (if (i32.eq (local.get $t) (i32.const 173)) (then
      (drop (call $replace_value (i32.const 2) (i32.const 1024) (i32.const 7) (i32.const 1056) (i32.const 3)))
      (return (i32.const 0))))
    (if (i32.eq (local.get $t) (i32.const 174)) (then
      (drop (call $remove_value (i32.const 2) (i32.const 1040) (i32.const 10)))
      (return (i32.const 0))))
    (if (i32.eq (local.get $t) (i32.const 175)) (then
      (return (call $reply_size_check (i32.const 2)))))
    (if (i32.eq (local.get $t) (i32.const 176)) (then
      (return (call $reply_status (call $get_buffer_bytes (i32.const 1) (i32.const 0) (i32.const 10) (i32.const 512) (i32.const 516))))))
    (if (i32.eq (local.get $t) (i32.const 177)) (then
      (return (call $reply_num (call $get_property (i32.const 1280) (i32.const 13) (i32.const 512) (i32.const 516))))))
    ;;@0.2.0,0.2.1 (if (i32.eq (local.get $t) (i32.const 178)) (then (drop (call $close_stream (i32.const 1))) (return (i32.const 1))))
    (if (i32.eq (local.get $t) (i32.const 179)) (then
      (return (call $reply_result (call $get_value (i32.const 0) (i32.const 32) (i32.const 3) (i32.const 512) (i32.const 516))))))
    (i32.const -1))

  ;; Response body, ids >= 100 (`-1`: not handled).
  (func $stream_response_body (param $size i32) (param $eos i32) (result i32)
    (local $t i32)
    (local.set $t (global.get $id))
    (if (i32.lt_u (local.get $t) (i32.const 180)) (then (return (i32.const -1))))
    ;; Envoy's example filter: every call writes `Hello, world` over the first 12 bytes of
    ;; the chunk in flight and continues.
    (if (i32.eq (local.get $t) (i32.const 187)) (then
      (drop (call $set_buffer_bytes (i32.const 1) (i32.const 0) (i32.const 12) (i32.const 1328) (i32.const 12)))
      (return (i32.const 0))))
    ;; Traces every call as `size:eos,` and answers with the trace at the end of the stream.
    (if (i32.eq (local.get $t) (i32.const 188)) (then
      (call $emit_num (local.get $size))
      (call $emit (i32.const 1220) (i32.const 1))
      (call $emit_num (local.get $eos))
      (call $emit (i32.const 1224) (i32.const 1))
      (if (i32.eqz (local.get $eos)) (then (return (i32.const 0))))
      (return (call $reply))))
    (if (i32.eqz (local.get $eos)) (then (return (i32.const 1))))
    (if (i32.eq (local.get $t) (i32.const 180)) (then
      (call $emit (i32.const 1248) (i32.const 5))
      (return (call $reply_result (call $get_buffer_bytes (i32.const 1) (i32.const 0) (local.get $size) (i32.const 512) (i32.const 516))))))
    (if (i32.eq (local.get $t) (i32.const 181)) (then
      (drop (call $set_buffer_bytes (i32.const 1) (i32.const 0) (local.get $size) (i32.const 1104) (i32.const 9)))
      (return (i32.const 0))))
    (if (i32.eq (local.get $t) (i32.const 182)) (then
      (return (call $reply_u32 (call $get_buffer_status (i32.const 1) (i32.const 520) (i32.const 524))))))
    (if (i32.eq (local.get $t) (i32.const 183)) (then
      (return (call $reply_status (call $get_buffer_bytes (i32.const 0) (i32.const 0) (i32.const 10) (i32.const 512) (i32.const 516))))))
    (if (i32.eq (local.get $t) (i32.const 184)) (then
      (drop (call $set_buffer_bytes (i32.const 1) (i32.const -1) (i32.const 0) (i32.const 1096) (i32.const 5)))
      (return (i32.const 0))))
    ;;@0.2.0,0.2.1 (if (i32.eq (local.get $t) (i32.const 185)) (then (drop (call $close_stream (i32.const 1))) (return (i32.const 1))))
    (if (i32.eq (local.get $t) (i32.const 186)) (then
      (return (call $reply_map (call $get_pairs (i32.const 2) (i32.const 512) (i32.const 516))))))
    (i32.const -1))

  ;; Trailers (map 1 or 3), ids 190..199: what the callback saw, in a local response.
  (func $stream_trailers (param $map i32) (result i32)
    (local $t i32)
    (local.set $t (global.get $id))
    (if (i32.eq (local.get $t) (i32.const 190)) (then
      (return (call $reply_map (call $get_pairs (local.get $map) (i32.const 512) (i32.const 516))))))
    (if (i32.eq (local.get $t) (i32.const 191)) (then
      (return (call $reply_result (call $get_value (local.get $map) (i32.const 1312) (i32.const 3) (i32.const 512) (i32.const 516))))))
    (if (i32.eq (local.get $t) (i32.const 192)) (then
      (return (call $reply_size_check (local.get $map)))))
    (if (i32.eq (local.get $t) (i32.const 193)) (then
      (drop (call $add_value (local.get $map) (i32.const 48) (i32.const 7) (i32.const 64) (i32.const 3)))
      (drop (call $replace_value (local.get $map) (i32.const 1312) (i32.const 3) (i32.const 80) (i32.const 3)))
      (return (call $reply_map (call $get_pairs (local.get $map) (i32.const 512) (i32.const 516))))))
    (if (i32.eq (local.get $t) (i32.const 194)) (then
      (drop (call $remove_value (local.get $map) (i32.const 1312) (i32.const 3)))
      (return (call $reply_map (call $get_pairs (local.get $map) (i32.const 512) (i32.const 516))))))
    (if (i32.eq (local.get $t) (i32.const 195)) (then
      (drop (call $set_pairs (local.get $map) (i32.const 112) (i32.const 23)))
      (return (call $reply_map (call $get_pairs (local.get $map) (i32.const 512) (i32.const 516))))))
    (if (i32.eq (local.get $t) (i32.const 197)) (then
      (call $emit_num (global.get $body_eos))
      (call $emit (i32.const 1224) (i32.const 1))
      (call $emit_num (global.get $sizes))
      (return (call $reply))))
    ;; Adds x-added: yes to the trailers and goes on (checked in what arrives).
    (if (i32.eq (local.get $t) (i32.const 198)) (then
      (drop (call $add_value (local.get $map) (i32.const 48) (i32.const 7) (i32.const 64) (i32.const 3)))
      (return (i32.const 0))))
    (if (i32.eq (local.get $t) (i32.const 196)) (then
      (return (call $reply_status (call $get_value (local.get $map) (i32.const 1232) (i32.const 8) (i32.const 512) (i32.const 516))))))
    (i32.const 0))

  ;; `<what>ctx=<ctx> test=<id>` at INFO.
  (func $log_end (param $what i32) (param $len i32) (param $ctx i32)
    (global.set $out (i32.const 0))
    (call $emit (local.get $what) (local.get $len))
    (call $emit_num (local.get $ctx))
    (call $emit (i32.const 1184) (i32.const 6))
    (call $emit_num (global.get $id))
    (drop (call $log (i32.const 2) (i32.const 8192) (global.get $out)))
    (global.set $out (i32.const 0)))

  (func (export "proxy_on_request_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
    (local $r i32)
    (local.set $r (call $stream_request_body (local.get $size) (local.get $eos)))
    (if (i32.ge_s (local.get $r) (i32.const 0)) (then (return (local.get $r))))
    (i32.const 0))
  (func (export "proxy_on_response_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
    (local $r i32)
    (local.set $r (call $stream_response_body (local.get $size) (local.get $eos)))
    (if (i32.ge_s (local.get $r) (i32.const 0)) (then (return (local.get $r))))
    (i32.const 0))
  (func (export "proxy_on_request_trailers") (param $ctx i32) (param $n i32) (result i32)
    (call $stream_trailers (i32.const 1)))
  (func (export "proxy_on_response_trailers") (param $ctx i32) (param $n i32) (result i32)
    (call $stream_trailers (i32.const 3)))
  (func (export "proxy_on_done") (param $ctx i32) (result i32)
    (call $log_end (i32.const 1136) (i32.const 12) (local.get $ctx))
    (i32.const 1))
  (func (export "proxy_on_log") (param $ctx i32)
    ;; Test 40 checks a line logged after the response has gone out.
    (if (i32.eq (global.get $id) (i32.const 40)) (then
      (drop (call $log (i32.const 2) (i32.const 352) (i32.const 14)))))
    (call $log_end (i32.const 1152) (i32.const 11) (local.get $ctx)))
  (func (export "proxy_on_delete") (param $ctx i32)
    (call $log_end (i32.const 1168) (i32.const 14) (local.get $ctx)))
)
