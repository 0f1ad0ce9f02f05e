;; The proxy-wasm conformance guest for root-context and asynchronous features (http calls,
;; pause and resume, ticks, effective context, status, done, shared data, shared queues,
;; metrics, gRPC and foreign functions), one template for ABI 0.1.0, 0.2.0 and 0.2.1 (a line
;; starting with `;;@V,..` is kept only for those versions, see conformance/src/case.rs).
;;
;; `proxy_on_request_headers` reads `x-test-id` and runs that test; an absent or unknown id
;; continues. Observed values come back in a local response the guest sends itself, statuses
;; as numbers, a sequence of them separated by `,`. Tests that pause keep the stream's
;; context id in a global and resume it from `proxy_on_http_call_response` or `proxy_on_tick`,
;; which the host delivers to the instance holding the paused stream, after
;; `proxy_set_effective_context`. `proxy_on_queue_ready` goes to any idle instance: it only
;; talks to the test through shared data. Keys, queue and metric names start with the
;; request's `x-conformance-key`, so every case has its own.
;;
;; Memory: constant strings below 512, out-params at 512..544, digits below 1000, the
;; conformance key at 1024, a name being built at 1536, the pair table at 2048, the
;; serialized header map at 4096, the reply at 8192 (OUT), host allocations bump from 65536
;; and restart with every callback.
(module
  (import "env" "proxy_get_header_map_value" (func $get_value (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add_value (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_size" (func $get_map_size (param i32 i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $send_local_response (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $get_buffer_bytes (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_http_call" (func $http_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_effective_context" (func $set_effective_context (param i32) (result i32)))
  (import "env" "proxy_set_tick_period_milliseconds" (func $set_tick (param i32) (result i32)))
  (import "env" "proxy_done" (func $done (result i32)))
  (import "env" "proxy_get_status" (func $get_status (param i32 i32 i32) (result i32)))
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  ;;@0.1.0 (import "env" "proxy_continue_request" (func $continue_request (result i32)))
  ;;@0.1.0 (import "env" "proxy_continue_response" (func $continue_response (result i32)))
  ;;@0.2.0,0.2.1 (import "env" "proxy_continue_stream" (func $continue_stream (param i32) (result i32)))
  (import "env" "proxy_get_shared_data" (func $get_shared (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_shared_data" (func $set_shared (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_register_shared_queue" (func $register_queue (param i32 i32 i32) (result i32)))
  (import "env" "proxy_resolve_shared_queue" (func $resolve_queue (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_enqueue_shared_queue" (func $enqueue (param i32 i32 i32) (result i32)))
  (import "env" "proxy_dequeue_shared_queue" (func $dequeue (param i32 i32 i32) (result i32)))
  (import "env" "proxy_define_metric" (func $define_metric (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_increment_metric" (func $increment_metric (param i32 i64) (result i32)))
  (import "env" "proxy_record_metric" (func $record_metric (param i32 i64) (result i32)))
  (import "env" "proxy_get_metric" (func $get_metric (param i32 i32) (result i32)))
  (import "env" "proxy_grpc_call" (func $grpc_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_grpc_stream" (func $grpc_stream (param i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_grpc_send" (func $grpc_send (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_grpc_cancel" (func $grpc_cancel (param i32) (result i32)))
  (import "env" "proxy_grpc_close" (func $grpc_close (param i32) (result i32)))
  ;;@0.2.0,0.2.1 (import "env" "proxy_call_foreign_function" (func $call_foreign (param i32 i32 i32 i32 i32 i32) (result i32)))

  (memory (export "memory") 2)

  (data (i32.const 16) "x-test-id")          ;; 9
  (data (i32.const 32) "x-conformance-key")  ;; 17
  (data (i32.const 64) ":method")            ;; 7
  (data (i32.const 80) ":path")              ;; 5
  (data (i32.const 96) ":authority")         ;; 10
  (data (i32.const 112) "POST")              ;; 4
  (data (i32.const 128) "/call")             ;; 5
  (data (i32.const 144) "upstream")          ;; 8
  (data (i32.const 160) "nowhere")           ;; 7
  (data (i32.const 176) "ping")              ;; 4
  (data (i32.const 192) "status:")           ;; 7
  (data (i32.const 208) ":status")           ;; 7
  (data (i32.const 224) "x-u")               ;; 3
  (data (i32.const 240) "/a b")              ;; 4, not a request target
  (data (i32.const 256) "x-call-status")     ;; 13
  (data (i32.const 272) "x-resumed-by")      ;; 12
  (data (i32.const 288) "tick")              ;; 4
  (data (i32.const 304) "x-ticks")           ;; 7
  (data (i32.const 320) "te")                ;; 2
  (data (i32.const 324) "trailers")          ;; 8
  (data (i32.const 336) "timeout")           ;; 7
  (data (i32.const 344) "badroot")           ;; 7
  (data (i32.const 352) "qready:")           ;; 7
  (data (i32.const 368) "qseen:")            ;; 6
  (data (i32.const 384) "hello")             ;; 5
  (data (i32.const 400) "abcd")              ;; single letters at 400..403
  (data (i32.const 416) "badtoken|")         ;; 9
  (data (i32.const 432) ",|")                ;; separators at 432, 433
  (data (i32.const 448) "-d-missing")        ;; suffixes: "-d" 2, "-missing" 8 at 450
  (data (i32.const 464) "-q-nope")           ;; "-q" 2, "-nope" 5 at 466
  (data (i32.const 480) "-c-g-h-r")          ;; "-c" 480, "-g" 482, "-h" 484, "-r" 486
  (data (i32.const 496) "call response")     ;; 13

  ;; Test ids that pause, and what they wait for.
  (global $id (mut i32) (i32.const 0))
  (global $ctx (mut i32) (i32.const 0))
  (global $token (mut i32) (i32.const 0))
  (global $wait (mut i32) (i32.const 0))   ;; 1: a tick resumes the request, 2: the response
  (global $ticks (mut i32) (i32.const 0))
  (global $qid (mut i32) (i32.const 0))
  (global $out (mut i32) (i32.const 0))
  (global $heap (mut i32) (i32.const 65536))
  (global $key_len (mut i32) (i32.const 0))
  (global $sb (mut i32) (i32.const 0))
  (global $pairs (mut i32) (i32.const 0))
  (global $call_timeout (mut i32) (i32.const 5000))

  (func (export "proxy_abi_version_{{abi_version}}"))

  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (if (i32.gt_u (i32.add (local.get $p) (local.get $size)) (i32.const 131072))
      (then (return (i32.const 0))))
    (global.set $heap (i32.add (local.get $p) (i32.and (i32.add (local.get $size) (i32.const 7)) (i32.const -8))))
    (local.get $p))

  ;; The root context's id, to check proxy_on_queue_ready reaches it.
  (global $root_id (mut i32) (i32.const 0))
  (func (export "proxy_on_context_create") (param $ctx i32) (param $parent i32)
    (if (i32.eqz (local.get $parent)) (then (global.set $root_id (local.get $ctx)))))
  ;; A VM configuration of 6 bytes (`reject`) is refused: the plugin must fail to load.
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
    (i32.ne (local.get 1) (i32.const 6)))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))

  ;; ---- reply helpers ----

  (func $emit (param $p i32) (param $n i32)
    (if (i32.gt_u (i32.add (global.get $out) (local.get $n)) (i32.const 4096))
      (then (local.set $n (i32.sub (i32.const 4096) (global.get $out)))))
    (memory.copy (i32.add (i32.const 8192) (global.get $out)) (local.get $p) (local.get $n))
    (global.set $out (i32.add (global.get $out) (local.get $n))))

  (func $comma (call $emit (i32.const 432) (i32.const 1)))
  (func $bar (call $emit (i32.const 433) (i32.const 1)))

  (func $emit_u64 (param $v i64)
    (local $p i32)
    (local.set $p (i32.const 1000))
    (loop $l
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p) (i32.wrap_i64 (i64.add (i64.const 48) (i64.rem_u (local.get $v) (i64.const 10)))))
      (local.set $v (i64.div_u (local.get $v) (i64.const 10)))
      (br_if $l (i64.ne (local.get $v) (i64.const 0))))
    (call $emit (local.get $p) (i32.sub (i32.const 1000) (local.get $p))))

  (func $emit_num (param $v i32)
    (call $emit_u64 (i64.extend_i32_u (local.get $v))))

  ;; A status then a comma.
  (func $st (param $s i32)
    (call $emit_num (local.get $s))
    (call $comma))

  ;; The host-allocated result in the out-params, or `status:N`.
  (func $emit_result (param $s i32)
    (if (i32.eqz (local.get $s))
      (then (call $emit (i32.load (i32.const 512)) (i32.load (i32.const 516))))
      (else
        (call $emit (i32.const 192) (i32.const 7))
        (call $emit_num (local.get $s)))))

  ;; Answers 200 with the assembled reply (the effective context must be the stream).
  (func $reply (result i32)
    (drop (call $send_local_response (i32.const 200) (i32.const 0) (i32.const 0)
      (i32.const 8192) (global.get $out) (i32.const 0) (i32.const 0) (i32.const -1)))
    (i32.const 1))

  ;; Makes the paused stream the effective context and answers with the reply.
  (func $reply_to_stream
    (drop (call $set_effective_context (global.get $ctx)))
    (drop (call $reply)))

  (func $resume_request
    ;;@0.1.0 (drop (call $continue_request))
    ;;@0.2.0,0.2.1 (drop (call $continue_stream (i32.const 0)))
  )

  (func $resume_response
    ;;@0.1.0 (drop (call $continue_response))
    ;;@0.2.0,0.2.1 (drop (call $continue_stream (i32.const 1)))
  )

  (func $stop_ticks
    (drop (call $set_tick (i32.const 0)))
    (global.set $wait (i32.const 0)))

  ;; ---- names: the conformance key plus suffixes, built at 1536 ----

  (func $sb_reset (global.set $sb (i32.const 0)))
  (func $sb_add (param $p i32) (param $n i32)
    (memory.copy (i32.add (i32.const 1536) (global.get $sb)) (local.get $p) (local.get $n))
    (global.set $sb (i32.add (global.get $sb) (local.get $n))))
  (func $sb_num (param $v i32)
    (local $p i32)
    (local.set $p (i32.const 1000))
    (loop $l
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p) (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10))))
      (local.set $v (i32.div_u (local.get $v) (i32.const 10)))
      (br_if $l (local.get $v)))
    (call $sb_add (local.get $p) (i32.sub (i32.const 1000) (local.get $p))))
  ;; key + suffix; the name's length (it starts at 1536).
  (func $name (param $p i32) (param $n i32) (result i32)
    (call $sb_reset)
    (call $sb_add (i32.const 1024) (global.get $key_len))
    (call $sb_add (local.get $p) (local.get $n))
    (global.get $sb))

  ;; ---- header maps for http calls ----

  (func $pair (param $kp i32) (param $kl i32) (param $vp i32) (param $vl i32)
    (local $e i32)
    (local.set $e (i32.add (i32.const 2048) (i32.mul (global.get $pairs) (i32.const 16))))
    (i32.store (local.get $e) (local.get $kp))
    (i32.store offset=4 (local.get $e) (local.get $kl))
    (i32.store offset=8 (local.get $e) (local.get $vp))
    (i32.store offset=12 (local.get $e) (local.get $vl))
    (global.set $pairs (i32.add (global.get $pairs) (i32.const 1))))

  ;; Serializes the pair table at 4096; returns the size.
  (func $serialize (result i32)
    (local $i i32) (local $e i32) (local $at i32)
    (i32.store (i32.const 4096) (global.get $pairs))
    (local.set $at (i32.add (i32.const 4100) (i32.mul (global.get $pairs) (i32.const 8))))
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (global.get $pairs)))
        (local.set $e (i32.add (i32.const 2048) (i32.mul (local.get $i) (i32.const 16))))
        (i32.store (i32.add (i32.const 4100) (i32.mul (local.get $i) (i32.const 8))) (i32.load offset=4 (local.get $e)))
        (i32.store (i32.add (i32.const 4104) (i32.mul (local.get $i) (i32.const 8))) (i32.load offset=12 (local.get $e)))
        (memory.copy (local.get $at) (i32.load (local.get $e)) (i32.load offset=4 (local.get $e)))
        (local.set $at (i32.add (local.get $at) (i32.load offset=4 (local.get $e))))
        (i32.store8 (local.get $at) (i32.const 0))
        (local.set $at (i32.add (local.get $at) (i32.const 1)))
        (memory.copy (local.get $at) (i32.load offset=8 (local.get $e)) (i32.load offset=12 (local.get $e)))
        (local.set $at (i32.add (local.get $at) (i32.load offset=12 (local.get $e))))
        (i32.store8 (local.get $at) (i32.const 0))
        (local.set $at (i32.add (local.get $at) (i32.const 1)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    (i32.sub (local.get $at) (i32.const 4096)))

  ;; POST /call to `upstream` (or `nowhere` for variant 3) with body `ping`, forwarding the
  ;; conformance key; variant 4, 5, 6 leave out :method, :path, :authority, variant 7 sends a
  ;; :path that is no request target. The status; the token is kept in $token.
  (func $call (param $variant i32) (result i32)
    (local $s i32)
    (global.set $pairs (i32.const 0))
    (if (i32.ne (local.get $variant) (i32.const 4))
      (then (call $pair (i32.const 64) (i32.const 7) (i32.const 112) (i32.const 4))))
    (if (i32.eq (local.get $variant) (i32.const 7))
      (then (call $pair (i32.const 80) (i32.const 5) (i32.const 240) (i32.const 4))))
    (if (i32.and (i32.ne (local.get $variant) (i32.const 5)) (i32.ne (local.get $variant) (i32.const 7)))
      (then (call $pair (i32.const 80) (i32.const 5) (i32.const 128) (i32.const 5))))
    (if (i32.ne (local.get $variant) (i32.const 6))
      (then (call $pair (i32.const 96) (i32.const 10) (i32.const 144) (i32.const 8))))
    (call $pair (i32.const 32) (i32.const 17) (i32.const 1024) (global.get $key_len))
    ;; Variant 8 asks for response trailers (servers send them only to `te: trailers`).
    (if (i32.eq (local.get $variant) (i32.const 8))
      (then (call $pair (i32.const 320) (i32.const 2) (i32.const 324) (i32.const 8))))
    (i32.store (i32.const 528) (i32.const 0))
    (local.set $s (call $http_call
      (select (i32.const 160) (i32.const 144) (i32.eq (local.get $variant) (i32.const 3)))
      (select (i32.const 7) (i32.const 8) (i32.eq (local.get $variant) (i32.const 3)))
      (i32.const 4096) (call $serialize)
      (i32.const 176) (i32.const 4)
      (i32.const 0) (i32.const 0)
      (global.get $call_timeout) (i32.const 528)))
    (global.set $token (i32.load (i32.const 528)))
    (local.get $s))

  ;; Dispatches a call and pauses, or answers with the status if it failed.
  (func $call_and_pause (param $variant i32) (result i32)
    (local $s i32)
    (local.set $s (call $call (local.get $variant)))
    (if (local.get $s) (then
      (call $emit (i32.const 192) (i32.const 7))
      (call $emit_num (local.get $s))
      (return (call $reply))))
    (i32.const 1))

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

  (func $read_key
    (global.set $key_len (i32.const 0))
    (if (i32.eqz (call $get_value (i32.const 0) (i32.const 32) (i32.const 17) (i32.const 512) (i32.const 516)))
      (then
        (global.set $key_len (i32.load (i32.const 516)))
        (if (i32.gt_u (global.get $key_len) (i32.const 400)) (then (global.set $key_len (i32.const 400))))
        (memory.copy (i32.const 1024) (i32.load (i32.const 512)) (global.get $key_len)))))

  ;; Emits the shared value of the name at 1536 (length $n), or `status:N`.
  (func $emit_shared (param $n i32)
    (call $emit_result (call $get_shared (i32.const 1536) (local.get $n) (i32.const 512) (i32.const 516) (i32.const 520))))

  ;;@0.1.0 (func (export "proxy_on_request_headers") (param $ctx i32) (param $nh i32) (result i32)
  ;;@0.2.0,0.2.1 (func (export "proxy_on_request_headers") (param $ctx i32) (param $nh i32) (param $eos i32) (result i32)
    (local $t i32) (local $n i32) (local $cas i32) (local $a i32) (local $b i32) (local $c i32)
    (global.set $heap (i32.const 65536))
    (global.set $out (i32.const 0))
    (global.set $wait (i32.const 0))
    (global.set $ticks (i32.const 0))
    (global.set $ctx (local.get $ctx))
    (global.set $id (call $read_test_id))
    (call $read_key)
    (local.set $t (global.get $id))

    ;; http calls: 1 (reply from the call response), 2 (resume from it), 8 (status).
    (if (i32.or (i32.eq (local.get $t) (i32.const 1))
          (i32.or (i32.eq (local.get $t) (i32.const 2)) (i32.eq (local.get $t) (i32.const 8))))
      (then (return (call $call_and_pause (i32.const 0)))))
    ;; 3: unknown upstream; 4, 5, 6: a required pseudo-header missing.
    (if (i32.and (i32.ge_u (local.get $t) (i32.const 3)) (i32.le_u (local.get $t) (i32.const 6)))
      (then
        (call $emit_num (call $call (local.get $t)))
        (return (call $reply))))
    ;; 7: a call that cannot be sent: the response callback sees the failure.
    (if (i32.eq (local.get $t) (i32.const 7))
      (then (return (call $call_and_pause (i32.const 7)))))
    ;; 90: a call to the upstream with a 200 ms timeout; the callback answers as 7 does, and
    ;; logs `call response` at INFO, level 2 (for cases where the stream ends first: no callback).
    (global.set $call_timeout (i32.const 5000))
    (if (i32.eq (local.get $t) (i32.const 90)) (then
      (global.set $call_timeout (i32.const 200))
      (return (call $call_and_pause (i32.const 0)))))
    ;; 91: as 1, the call sent with `te: trailers`, so the answer's trailers come too.
    (if (i32.eq (local.get $t) (i32.const 91))
      (then (return (call $call_and_pause (i32.const 8)))))
    ;; 9: outside a call response, map 6 is BAD_ARGUMENT and buffer 4 NOT_FOUND.
    (if (i32.eq (local.get $t) (i32.const 9)) (then
      (call $st (call $get_value (i32.const 6) (i32.const 208) (i32.const 7) (i32.const 512) (i32.const 516)))
      (call $emit_num (call $get_buffer_bytes (i32.const 4) (i32.const 0) (i32.const 10) (i32.const 512) (i32.const 516)))
      (return (call $reply))))
    ;; 10: effective context, unknown then own.
    (if (i32.eq (local.get $t) (i32.const 10)) (then
      (call $st (call $set_effective_context (i32.const 99999)))
      (call $emit_num (call $set_effective_context (local.get $ctx)))
      (return (call $reply))))
    ;; 11: proxy_done with nothing pending.
    (if (i32.eq (local.get $t) (i32.const 11)) (then
      (call $emit_num (call $done))
      (return (call $reply))))
    ;; 12: continue_stream with an unknown stream type (0.2.x).
    (if (i32.eq (local.get $t) (i32.const 12)) (then
      ;;@0.2.0,0.2.1 (call $emit_num (call $continue_stream (i32.const 9)))
      (return (call $reply))))
    ;; 24: a period is accepted, and 0 (no more ticks) too.
    (if (i32.eq (local.get $t) (i32.const 24)) (then
      (call $st (call $set_tick (i32.const 1000)))
      (call $emit_num (call $set_tick (i32.const 0)))
      (return (call $reply))))
    ;; 20, 21, 23: pause; ticks resume the request (23: through a call the tick makes).
    (if (i32.or (i32.eq (local.get $t) (i32.const 23))
          (i32.or (i32.eq (local.get $t) (i32.const 20)) (i32.eq (local.get $t) (i32.const 21)))) (then
      (drop (call $set_tick (i32.const 5)))
      (global.set $wait (i32.const 1))
      (return (i32.const 1))))

    ;; 30: set unconditionally, get.
    (if (i32.eq (local.get $t) (i32.const 30)) (then
      (local.set $n (call $name (i32.const 448) (i32.const 2)))
      (call $st (call $set_shared (i32.const 1536) (local.get $n) (i32.const 384) (i32.const 5) (i32.const 0)))
      (i32.store (i32.const 520) (i32.const 0))
      (call $st (call $get_shared (i32.const 1536) (local.get $n) (i32.const 512) (i32.const 516) (i32.const 520)))
      (call $emit (i32.load (i32.const 512)) (i32.load (i32.const 516)))
      (call $comma)
      (call $emit_num (i32.ne (i32.load (i32.const 520)) (i32.const 0)))
      (return (call $reply))))
    ;; 31: compare-and-swap.
    (if (i32.eq (local.get $t) (i32.const 31)) (then
      (local.set $n (call $name (i32.const 448) (i32.const 2)))
      (call $st (call $set_shared (i32.const 1536) (local.get $n) (i32.const 400) (i32.const 1) (i32.const 0)))
      (drop (call $get_shared (i32.const 1536) (local.get $n) (i32.const 512) (i32.const 516) (i32.const 520)))
      (local.set $cas (i32.load (i32.const 520)))
      (call $st (call $set_shared (i32.const 1536) (local.get $n) (i32.const 401) (i32.const 1) (i32.add (local.get $cas) (i32.const 1))))
      (call $st (call $set_shared (i32.const 1536) (local.get $n) (i32.const 401) (i32.const 1) (local.get $cas)))
      (call $st (call $set_shared (i32.const 1536) (local.get $n) (i32.const 402) (i32.const 1) (local.get $cas)))
      (call $st (call $set_shared (i32.const 1536) (local.get $n) (i32.const 403) (i32.const 1) (i32.const 0)))
      (call $emit_shared (local.get $n))
      (return (call $reply))))
    ;; 32: a missing key.
    (if (i32.eq (local.get $t) (i32.const 32)) (then
      (call $emit_shared (call $name (i32.const 450) (i32.const 8)))
      (return (call $reply))))
    ;; 33: a missing key is created whatever the cas.
    (if (i32.eq (local.get $t) (i32.const 33)) (then
      (local.set $n (call $name (i32.const 448) (i32.const 2)))
      (call $st (call $set_shared (i32.const 1536) (local.get $n) (i32.const 384) (i32.const 5) (i32.const 12345)))
      (call $emit_shared (local.get $n))
      (return (call $reply))))

    ;; 40: register twice, resolve: one id.
    (if (i32.eq (local.get $t) (i32.const 40)) (then
      (local.set $n (call $name (i32.const 464) (i32.const 2)))
      (call $st (call $register_queue (i32.const 1536) (local.get $n) (i32.const 520)))
      (local.set $a (i32.load (i32.const 520)))
      (call $st (call $register_queue (i32.const 1536) (local.get $n) (i32.const 520)))
      (local.set $b (i32.load (i32.const 520)))
      (call $st (call $resolve_queue (i32.const 0) (i32.const 0) (i32.const 1536) (local.get $n) (i32.const 520)))
      (local.set $c (i32.load (i32.const 520)))
      (call $st (i32.ne (local.get $a) (i32.const 0)))
      (call $st (i32.eq (local.get $a) (local.get $b)))
      (call $emit_num (i32.eq (local.get $a) (local.get $c)))
      (return (call $reply))))
    ;; 41: resolve an unknown queue.
    (if (i32.eq (local.get $t) (i32.const 41)) (then
      (local.set $n (call $name (i32.const 466) (i32.const 5)))
      (call $emit_num (call $resolve_queue (i32.const 0) (i32.const 0) (i32.const 1536) (local.get $n) (i32.const 520)))
      (return (call $reply))))
    ;; 42: first in, first out, then EMPTY.
    (if (i32.eq (local.get $t) (i32.const 42)) (then
      (local.set $n (call $name (i32.const 464) (i32.const 2)))
      (drop (call $register_queue (i32.const 1536) (local.get $n) (i32.const 520)))
      (local.set $a (i32.load (i32.const 520)))
      (call $st (call $enqueue (local.get $a) (i32.const 400) (i32.const 1)))
      (call $st (call $enqueue (local.get $a) (i32.const 401) (i32.const 1)))
      (call $emit_result (call $dequeue (local.get $a) (i32.const 512) (i32.const 516)))
      (call $comma)
      (call $emit_result (call $dequeue (local.get $a) (i32.const 512) (i32.const 516)))
      (call $comma)
      (call $emit_num (call $dequeue (local.get $a) (i32.const 512) (i32.const 516)))
      (return (call $reply))))
    ;; 43: enqueue to an unknown queue id.
    (if (i32.eq (local.get $t) (i32.const 43)) (then
      (call $emit_num (call $enqueue (i32.const 0x7ffffff0) (i32.const 400) (i32.const 1)))
      (return (call $reply))))
    ;; 46: dequeue from an unknown queue id.
    (if (i32.eq (local.get $t) (i32.const 46)) (then
      (call $emit_num (call $dequeue (i32.const 0x7ffffff0) (i32.const 512) (i32.const 516)))
      (return (call $reply))))
    ;; 45: enqueue to a registered queue: OK for each item, and every item is kept (counted
    ;; by dequeuing until the queue answers anything but OK).
    (if (i32.eq (local.get $t) (i32.const 45)) (then
      (local.set $n (call $name (i32.const 464) (i32.const 2)))
      (drop (call $register_queue (i32.const 1536) (local.get $n) (i32.const 520)))
      (local.set $a (i32.load (i32.const 520)))
      (call $st (call $enqueue (local.get $a) (i32.const 400) (i32.const 1)))
      (call $st (call $enqueue (local.get $a) (i32.const 401) (i32.const 2)))
      (call $st (call $enqueue (local.get $a) (i32.const 384) (i32.const 5)))
      (local.set $b (i32.const 0))
      (block $done
        (loop $l
          (br_if $done (call $dequeue (local.get $a) (i32.const 512) (i32.const 516)))
          (local.set $b (i32.add (local.get $b) (i32.const 1)))
          (br_if $done (i32.ge_u (local.get $b) (i32.const 10)))
          (br $l)))
      (call $emit_num (local.get $b))
      (return (call $reply))))
    ;; 44: enqueue for proxy_on_queue_ready, which passes the item back through shared data;
    ;; ticks wait for it.
    (if (i32.eq (local.get $t) (i32.const 44)) (then
      (local.set $n (call $name (i32.const 486) (i32.const 2)))
      (drop (call $register_queue (i32.const 1536) (local.get $n) (i32.const 520)))
      (global.set $qid (i32.load (i32.const 520)))
      (call $sb_reset)
      (call $sb_add (i32.const 352) (i32.const 7))
      (call $sb_num (global.get $qid))
      (drop (call $set_shared (i32.const 1536) (global.get $sb) (i32.const 400) (i32.const 1) (i32.const 0)))
      (local.set $a (call $enqueue (global.get $qid) (i32.const 384) (i32.const 5)))
      (if (local.get $a) (then
        (call $emit_num (local.get $a))
        (return (call $reply))))
      (drop (call $set_tick (i32.const 5)))
      (global.set $wait (i32.const 1))
      (return (i32.const 1))))

    ;; 50: counter.
    (if (i32.eq (local.get $t) (i32.const 50)) (then
      (call $st (call $define_metric (i32.const 0) (i32.const 1536) (call $name (i32.const 480) (i32.const 2)) (i32.const 520)))
      (local.set $a (i32.load (i32.const 520)))
      (call $st (call $increment_metric (local.get $a) (i64.const 2)))
      (call $st (call $increment_metric (local.get $a) (i64.const 3)))
      (call $st (call $get_metric (local.get $a) (i32.const 536)))
      (call $emit_u64 (i64.load (i32.const 536)))
      (call $comma)
      (call $st (call $increment_metric (local.get $a) (i64.const -1)))
      (call $st (call $increment_metric (local.get $a) (i64.const 0)))
      (drop (call $get_metric (local.get $a) (i32.const 536)))
      (call $emit_u64 (i64.load (i32.const 536)))
      (return (call $reply))))
    ;; 51: gauge.
    (if (i32.eq (local.get $t) (i32.const 51)) (then
      (call $st (call $define_metric (i32.const 1) (i32.const 1536) (call $name (i32.const 482) (i32.const 2)) (i32.const 520)))
      (local.set $a (i32.load (i32.const 520)))
      (call $st (call $record_metric (local.get $a) (i64.const 9)))
      (drop (call $get_metric (local.get $a) (i32.const 536)))
      (call $emit_u64 (i64.load (i32.const 536)))
      (call $comma)
      (call $st (call $increment_metric (local.get $a) (i64.const -4)))
      (drop (call $get_metric (local.get $a) (i32.const 536)))
      (call $emit_u64 (i64.load (i32.const 536)))
      (call $comma)
      (call $st (call $increment_metric (local.get $a) (i64.const 2)))
      (call $st (call $get_metric (local.get $a) (i32.const 536)))
      (call $emit_u64 (i64.load (i32.const 536)))
      (return (call $reply))))
    ;; 52: histogram: record only.
    (if (i32.eq (local.get $t) (i32.const 52)) (then
      (call $st (call $define_metric (i32.const 2) (i32.const 1536) (call $name (i32.const 484) (i32.const 2)) (i32.const 520)))
      (local.set $a (i32.load (i32.const 520)))
      (call $st (call $record_metric (local.get $a) (i64.const 7)))
      (call $emit_num (call $increment_metric (local.get $a) (i64.const 1)))
      (return (call $reply))))
    ;; 57: get_metric of a histogram.
    (if (i32.eq (local.get $t) (i32.const 57)) (then
      (call $st (call $define_metric (i32.const 2) (i32.const 1536) (call $name (i32.const 484) (i32.const 2)) (i32.const 520)))
      (call $emit_num (call $get_metric (i32.load (i32.const 520)) (i32.const 536)))
      (return (call $reply))))
    ;; 56: get_metric: a fresh counter reads 0, a gauge what was recorded.
    (if (i32.eq (local.get $t) (i32.const 56)) (then
      (call $st (call $define_metric (i32.const 0) (i32.const 1536) (call $name (i32.const 480) (i32.const 2)) (i32.const 520)))
      (i64.store (i32.const 536) (i64.const 99))
      (call $st (call $get_metric (i32.load (i32.const 520)) (i32.const 536)))
      (call $emit_u64 (i64.load (i32.const 536)))
      (call $comma)
      (call $st (call $define_metric (i32.const 1) (i32.const 1536) (call $name (i32.const 482) (i32.const 2)) (i32.const 520)))
      (local.set $a (i32.load (i32.const 520)))
      (call $st (call $record_metric (local.get $a) (i64.const 42)))
      (call $st (call $get_metric (local.get $a) (i32.const 536)))
      (call $emit_u64 (i64.load (i32.const 536)))
      (return (call $reply))))
    ;; 53: an unknown metric type.
    (if (i32.eq (local.get $t) (i32.const 53)) (then
      (call $emit_num (call $define_metric (i32.const 3) (i32.const 1536) (call $name (i32.const 480) (i32.const 2)) (i32.const 520)))
      (return (call $reply))))
    ;; 54: increment an unknown metric id.
    (if (i32.eq (local.get $t) (i32.const 54)) (then
      (call $emit_num (call $increment_metric (i32.const 0x7ffffff0) (i64.const 1)))
      (return (call $reply))))
    ;; 58, 59: record, get an unknown metric id.
    (if (i32.eq (local.get $t) (i32.const 58)) (then
      (call $emit_num (call $record_metric (i32.const 0x7ffffff0) (i64.const 1)))
      (return (call $reply))))
    (if (i32.eq (local.get $t) (i32.const 59)) (then
      (call $emit_num (call $get_metric (i32.const 0x7ffffff0) (i32.const 536)))
      (return (call $reply))))
    ;; 55: defining the same metric twice gives the same id.
    (if (i32.eq (local.get $t) (i32.const 55)) (then
      (local.set $n (call $name (i32.const 480) (i32.const 2)))
      (call $st (call $define_metric (i32.const 0) (i32.const 1536) (local.get $n) (i32.const 520)))
      (local.set $a (i32.load (i32.const 520)))
      (call $st (call $define_metric (i32.const 0) (i32.const 1536) (local.get $n) (i32.const 520)))
      (call $emit_num (i32.eq (local.get $a) (i32.load (i32.const 520))))
      (return (call $reply))))

    ;; 60..65: gRPC and foreign functions.
    (if (i32.eq (local.get $t) (i32.const 60)) (then
      (call $emit_num (call $grpc_call (i32.const 144) (i32.const 8) (i32.const 384) (i32.const 5)
        (i32.const 176) (i32.const 4) (i32.const 0) (i32.const 0) (i32.const 176) (i32.const 4)
        (i32.const 1000) (i32.const 528)))
      (return (call $reply))))
    (if (i32.eq (local.get $t) (i32.const 61)) (then
      (call $emit_num (call $grpc_stream (i32.const 144) (i32.const 8) (i32.const 384) (i32.const 5)
        (i32.const 176) (i32.const 4) (i32.const 0) (i32.const 0) (i32.const 528)))
      (return (call $reply))))
    (if (i32.eq (local.get $t) (i32.const 62)) (then
      (call $emit_num (call $grpc_send (i32.const 1) (i32.const 176) (i32.const 4) (i32.const 0)))
      (return (call $reply))))
    (if (i32.eq (local.get $t) (i32.const 63)) (then
      (call $emit_num (call $grpc_cancel (i32.const 1)))
      (return (call $reply))))
    (if (i32.eq (local.get $t) (i32.const 64)) (then
      (call $emit_num (call $grpc_close (i32.const 1)))
      (return (call $reply))))
    (if (i32.eq (local.get $t) (i32.const 65)) (then
      ;;@0.2.0,0.2.1 (call $emit_num (call $call_foreign (i32.const 384) (i32.const 5) (i32.const 176) (i32.const 4) (i32.const 512) (i32.const 516)))
      (return (call $reply))))
    (i32.const 0))

  ;;@0.1.0 (func (export "proxy_on_response_headers") (param $ctx i32) (param $nh i32) (result i32)
  ;;@0.2.0,0.2.1 (func (export "proxy_on_response_headers") (param $ctx i32) (param $nh i32) (param $eos i32) (result i32)
    ;; 14: pause; the call response resumes the response.
    (if (i32.eq (global.get $id) (i32.const 14)) (then
      (if (call $call (i32.const 0)) (then (return (i32.const 0))))
      (return (i32.const 1))))
    ;; 22: pause; a tick resumes the response.
    (if (i32.eq (global.get $id) (i32.const 22)) (then
      (drop (call $set_tick (i32.const 5)))
      (global.set $wait (i32.const 2))
      (return (i32.const 1))))
    (i32.const 0))

  (func (export "proxy_on_http_call_response") (param $root i32) (param $token i32) (param $nh i32) (param $size i32) (param $nt i32)
    (local $s i32)
    (global.set $heap (i32.const 65536))
    (global.set $out (i32.const 0))
    ;; 1, 91: `:status|x-u|trailer count|body` of the call response.
    (if (i32.or (i32.eq (global.get $id) (i32.const 1)) (i32.eq (global.get $id) (i32.const 91))) (then
      (if (i32.ne (local.get $token) (global.get $token))
        (then (call $emit (i32.const 416) (i32.const 9))))
      (call $emit_result (call $get_value (i32.const 6) (i32.const 208) (i32.const 7) (i32.const 512) (i32.const 516)))
      (call $bar)
      (call $emit_result (call $get_value (i32.const 6) (i32.const 224) (i32.const 3) (i32.const 512) (i32.const 516)))
      (call $bar)
      (local.set $s (call $get_map_size (i32.const 7) (i32.const 520)))
      (if (local.get $s)
        (then (call $emit_result (local.get $s)))
        (else (call $emit_num (i32.load (i32.const 520)))))
      (call $bar)
      (call $emit_result (call $get_buffer_bytes (i32.const 4) (i32.const 0) (local.get $size) (i32.const 512) (i32.const 516)))
      (call $reply_to_stream)
      (return)))
    ;; 2, 23: the request goes on with the call's status added.
    (if (i32.or (i32.eq (global.get $id) (i32.const 2)) (i32.eq (global.get $id) (i32.const 23))) (then
      (drop (call $get_value (i32.const 6) (i32.const 208) (i32.const 7) (i32.const 512) (i32.const 516)))
      (drop (call $set_effective_context (global.get $ctx)))
      (drop (call $add_value (i32.const 0) (i32.const 256) (i32.const 13) (i32.load (i32.const 512)) (i32.load (i32.const 516))))
      (call $resume_request)
      (return)))
    (if (i32.eq (global.get $id) (i32.const 90))
      (then (drop (call $log (i32.const 2) (i32.const 496) (i32.const 13)))))
    ;; 7, 90: a failed call: `headers,body,trailers|status code`.
    (if (i32.or (i32.eq (global.get $id) (i32.const 7)) (i32.eq (global.get $id) (i32.const 90))) (then
      (call $st (local.get $nh))
      (call $st (local.get $size))
      (call $emit_num (local.get $nt))
      (call $bar)
      (drop (call $get_status (i32.const 520) (i32.const 512) (i32.const 516)))
      (call $emit_num (i32.load (i32.const 520)))
      (call $reply_to_stream)
      (return)))
    ;; 8: proxy_get_status after a response: `result,code`.
    (if (i32.eq (global.get $id) (i32.const 8)) (then
      (i32.store (i32.const 520) (i32.const 99))
      (call $st (call $get_status (i32.const 520) (i32.const 512) (i32.const 516)))
      (call $emit_num (i32.load (i32.const 520)))
      (call $reply_to_stream)
      (return)))
    ;; 14: the response goes on with the call's status added.
    (if (i32.eq (global.get $id) (i32.const 14)) (then
      (drop (call $get_value (i32.const 6) (i32.const 208) (i32.const 7) (i32.const 512) (i32.const 516)))
      (drop (call $set_effective_context (global.get $ctx)))
      (drop (call $add_value (i32.const 2) (i32.const 256) (i32.const 13) (i32.load (i32.const 512)) (i32.load (i32.const 516))))
      (call $resume_response))))

  (func (export "proxy_on_tick") (param $root i32)
    (global.set $heap (i32.const 65536))
    (if (i32.eqz (global.get $wait)) (then (return)))
    (global.set $ticks (i32.add (global.get $ticks) (i32.const 1)))
    ;; 20: the first tick resumes the request.
    (if (i32.eq (global.get $id) (i32.const 20)) (then
      (call $stop_ticks)
      (drop (call $set_effective_context (global.get $ctx)))
      (drop (call $add_value (i32.const 0) (i32.const 272) (i32.const 12) (i32.const 288) (i32.const 4)))
      (call $resume_request)
      (return)))
    ;; 21: ticks keep coming; the third resumes the request.
    (if (i32.eq (global.get $id) (i32.const 21)) (then
      (if (i32.lt_u (global.get $ticks) (i32.const 3)) (then (return)))
      (call $stop_ticks)
      (global.set $out (i32.const 0))
      (call $emit_num (global.get $ticks))
      (drop (call $set_effective_context (global.get $ctx)))
      (drop (call $add_value (i32.const 0) (i32.const 304) (i32.const 7) (i32.const 8192) (global.get $out)))
      (call $resume_request)
      (return)))
    ;; 22: the first tick resumes the response.
    (if (i32.eq (global.get $id) (i32.const 22)) (then
      (call $stop_ticks)
      (drop (call $set_effective_context (global.get $ctx)))
      (drop (call $add_value (i32.const 2) (i32.const 272) (i32.const 12) (i32.const 288) (i32.const 4)))
      (call $resume_response)
      (return)))
    ;; 23: the first tick calls out from the root context; the call response resumes.
    (if (i32.eq (global.get $id) (i32.const 23)) (then
      (call $stop_ticks)
      (if (call $call (i32.const 0)) (then
        (call $emit (i32.const 192) (i32.const 7))
        (call $reply_to_stream)))
      (return)))
    ;; 44: answer with what proxy_on_queue_ready dequeued, once it has.
    (if (i32.eq (global.get $id) (i32.const 44)) (then
      (call $sb_reset)
      (call $sb_add (i32.const 368) (i32.const 6))
      (call $sb_num (global.get $qid))
      (global.set $out (i32.const 0))
      (if (i32.eqz (call $get_shared (i32.const 1536) (global.get $sb) (i32.const 512) (i32.const 516) (i32.const 520)))
        (then
          (call $stop_ticks)
          (call $emit (i32.load (i32.const 512)) (i32.load (i32.const 516)))
          (call $reply_to_stream)
          (return)))
      (if (i32.gt_u (global.get $ticks) (i32.const 2000)) (then
        (call $stop_ticks)
        (call $emit (i32.const 336) (i32.const 7))
        (call $reply_to_stream)))
      (return))))

  ;; Whichever instance gets it: if a test marked the queue (`qready:<id>`), dequeue one item
  ;; and leave it in `qseen:<id>`.
  (func (export "proxy_on_queue_ready") (param $root i32) (param $qid i32)
    (global.set $heap (i32.const 65536))
    (call $sb_reset)
    (call $sb_add (i32.const 352) (i32.const 7))
    (call $sb_num (local.get $qid))
    (if (call $get_shared (i32.const 1536) (global.get $sb) (i32.const 512) (i32.const 516) (i32.const 520))
      (then (return)))
    (if (call $dequeue (local.get $qid) (i32.const 512) (i32.const 516))
      (then (return)))
    ;; Delivered to another context than the root that registered the queue: hand back
    ;; `badroot` instead of the item (spec: on_queue_ready goes to the registering root).
    (if (i32.ne (local.get $root) (global.get $root_id)) (then
      (i32.store (i32.const 512) (i32.const 344))
      (i32.store (i32.const 516) (i32.const 7))))
    (call $sb_reset)
    (call $sb_add (i32.const 368) (i32.const 6))
    (call $sb_num (local.get $qid))
    (drop (call $set_shared (i32.const 1536) (global.get $sb) (i32.load (i32.const 512)) (i32.load (i32.const 516)) (i32.const 0))))
)
