;; The http-wasm conformance guest. `handle_request` reads the `x-test-id` request header
;; (a decimal number) and runs that test's behaviour; an absent or unknown id passes the
;; request on unchanged. Values the guest observes come back as the body of a response the
;; guest writes itself, so the runner compares exact bytes.
;;
;; Memory: constant strings below 960, decimal digits built at 960..1000, the test id read
;; at 2048, the reply assembled at 8192 (OUT), a scratch buffer at 65536 (S), a second one at
;; 98304 (B, tests 130..).
(module
  (import "http_handler" "enable_features" (func $enable_features (param i32) (result i32)))
  (import "http_handler" "get_config" (func $get_config (param i32 i32) (result i32)))
  (import "http_handler" "log_enabled" (func $log_enabled (param i32) (result i32)))
  (import "http_handler" "log" (func $log (param i32 i32 i32)))
  (import "http_handler" "get_method" (func $get_method (param i32 i32) (result i32)))
  (import "http_handler" "set_method" (func $set_method (param i32 i32)))
  (import "http_handler" "get_uri" (func $get_uri (param i32 i32) (result i32)))
  (import "http_handler" "set_uri" (func $set_uri (param i32 i32)))
  (import "http_handler" "get_protocol_version" (func $get_protocol_version (param i32 i32) (result i32)))
  (import "http_handler" "get_header_names" (func $get_header_names (param i32 i32 i32) (result i64)))
  (import "http_handler" "get_header_values" (func $get_header_values (param i32 i32 i32 i32 i32) (result i64)))
  (import "http_handler" "set_header_value" (func $set_header_value (param i32 i32 i32 i32 i32)))
  (import "http_handler" "add_header_value" (func $add_header_value (param i32 i32 i32 i32 i32)))
  (import "http_handler" "remove_header" (func $remove_header (param i32 i32 i32)))
  (import "http_handler" "read_body" (func $read_body (param i32 i32 i32) (result i64)))
  (import "http_handler" "write_body" (func $write_body (param i32 i32 i32)))
  (import "http_handler" "get_status_code" (func $get_status_code (result i32)))
  (import "http_handler" "set_status_code" (func $set_status_code (param i32)))
  (import "http_handler" "get_source_addr" (func $get_source_addr (param i32 i32) (result i32)))

  (memory (export "memory") 2)

  (data (i32.const 16) "x-test-id")        ;; 9
  (data (i32.const 32) "x-a")              ;; 3
  (data (i32.const 48) "X-A")              ;; 3
  (data (i32.const 64) "PUT")              ;; 3
  (data (i32.const 80) "/rewritten?y=2")   ;; 14
  (data (i32.const 112) "bad name")        ;; 8
  (data (i32.const 128) "set")             ;; 3
  (data (i32.const 144) "added")           ;; 5
  (data (i32.const 176) "replaced")        ;; 8
  (data (i32.const 192) "ab")              ;; 2
  (data (i32.const 200) "cd")              ;; 2
  (data (i32.const 208) "content-type")    ;; 12
  (data (i32.const 224) "text/plain")      ;; 10
  (data (i32.const 240) "x-status")        ;; 8
  (data (i32.const 256) "x-ctx")           ;; 5
  (data (i32.const 272) "x-from-request")  ;; 14
  (data (i32.const 288) "yes")             ;; 3
  (data (i32.const 304) "BAD METHOD")      ;; 10
  (data (i32.const 336) "hello from the guest") ;; 20
  (data (i32.const 368) "x-is-error")      ;; 10
  (data (i32.const 384) "logged")          ;; 6
  (data (i32.const 400) "ok")              ;; 2
  (data (i32.const 408) "bad")             ;; 3
  (data (i32.const 416) "guest says debug") ;; 16
  (data (i32.const 432) "guest says info")  ;; 15
  (data (i32.const 448) "guest says warn")  ;; 15
  (data (i32.const 464) "guest says error") ;; 16
  (data (i32.const 480) "guest says none")  ;; 15
  (data (i32.const 496) "x-trailer-names")  ;; 15
  (data (i32.const 512) "content-length")   ;; 14
  (data (i32.const 528) "0")                ;; 1
  (data (i32.const 544) "is_error=")        ;; 9

  (global $id (mut i32) (i32.const 0))
  (global $out (mut i32) (i32.const 0))
  ;; Requests this instance has handled: it lives as long as the instance (test 84).
  (global $served (mut i32) (i32.const 0))

  ;; ---- reply assembly at OUT = 8192 ----
  (func $emit_byte (param $b i32)
    (i32.store8 (i32.add (i32.const 8192) (global.get $out)) (local.get $b))
    (global.set $out (i32.add (global.get $out) (i32.const 1))))

  (func $emit (param $p i32) (param $n i32)
    (local $i i32)
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (call $emit_byte (i32.load8_u (i32.add (local.get $p) (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l))))

  ;; Unsigned decimal.
  (func $emit_num (param $v i64)
    (local $p i32)
    (local.set $p (i32.const 1000))
    (loop $l
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p)
        (i32.add (i32.const 48) (i32.wrap_i64 (i64.rem_u (local.get $v) (i64.const 10)))))
      (local.set $v (i64.div_u (local.get $v) (i64.const 10)))
      (br_if $l (i64.ne (local.get $v) (i64.const 0))))
    (call $emit (local.get $p) (i32.sub (i32.const 1000) (local.get $p))))

  ;; A NUL-terminated list with each NUL shown as `,`.
  (func $emit_list (param $p i32) (param $n i32)
    (local $i i32) (local $b i32)
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $b (i32.load8_u (i32.add (local.get $p) (local.get $i))))
        (if (i32.eqz (local.get $b)) (then (local.set $b (i32.const 44))))
        (call $emit_byte (local.get $b))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l))))

  ;; `count|items,` from a count_len result and the list at $p.
  (func $emit_count_list (param $r i64) (param $p i32)
    (call $emit_num (i64.shr_u (local.get $r) (i64.const 32)))
    (call $emit_byte (i32.const 124))
    (call $emit_list (local.get $p) (i32.wrap_i64 (local.get $r))))

  ;; Writes the assembled reply as the response body; the guest answers itself.
  (func $reply (result i64)
    (call $write_body (i32.const 1) (i32.const 8192) (global.get $out))
    (i64.const 0))

  ;; Sets response header (name at $np, $nl) to the assembled text, then clears it.
  (func $header_from_out (param $np i32) (param $nl i32)
    (call $set_header_value (i32.const 1) (local.get $np) (local.get $nl) (i32.const 8192) (global.get $out))
    (global.set $out (i32.const 0)))

  ;; Length of the first value of request header x-a copied to S (0 when absent).
  (func $x_a (result i32)
    (local $r i64) (local $i i32)
    (local.set $r (call $get_header_values (i32.const 0) (i32.const 32) (i32.const 3) (i32.const 65536) (i32.const 4096)))
    (if (i64.eqz (local.get $r)) (then (return (i32.const 0))))
    (block $done
      (loop $l
        (br_if $done (i32.eqz (i32.load8_u (i32.add (i32.const 65536) (local.get $i)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    (local.get $i))

  (func $read_test_id (result i32)
    (local $r i64) (local $i i32) (local $n i32) (local $b i32) (local $v i32)
    (local.set $r (call $get_header_values (i32.const 0) (i32.const 16) (i32.const 9) (i32.const 2048) (i32.const 32)))
    (local.set $n (i32.wrap_i64 (local.get $r)))
    (if (i32.or (i64.eqz (local.get $r)) (i32.gt_u (local.get $n) (i32.const 32)))
      (then (return (i32.const 0))))
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $b (i32.load8_u (i32.add (i32.const 2048) (local.get $i))))
        (br_if $done (i32.lt_u (local.get $b) (i32.const 48)))
        (br_if $done (i32.gt_u (local.get $b) (i32.const 57)))
        (local.set $v (i32.add (i32.mul (local.get $v) (i32.const 10)) (i32.sub (local.get $b) (i32.const 48))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    (local.get $v))

  ;; Reads the whole body of kind $k into S in chunks of $limit; returns its length.
  (func $read_all (param $k i32) (param $limit i32) (result i32)
    (local $r i64) (local $total i32)
    (block $done
      (loop $l
        (local.set $r (call $read_body (local.get $k) (i32.add (i32.const 65536) (local.get $total)) (local.get $limit)))
        (local.set $total (i32.add (local.get $total) (i32.wrap_i64 (local.get $r))))
        (br_if $done (i64.ne (i64.shr_u (local.get $r) (i64.const 32)) (i64.const 0)))
        (br_if $done (i32.eqz (i32.wrap_i64 (local.get $r))))
        (br $l)))
    (local.get $total))

  ;; Single-value getter with a 1-byte buffer: `length:first byte of the untouched buffer`.
  (func $small_value (param $len i32) (result i64)
    (call $emit_num (i64.extend_i32_u (local.get $len)))
    (call $emit_byte (i32.const 58))
    (call $emit (i32.const 65536) (i32.const 1))
    (call $reply))

  ;; Getter $w (0 method, 1 uri, 2 protocol version, 3 config, 4 source address, 5 request
  ;; header names, 6 request header x-a values) into ($p, $limit); the byte length it returns.
  (func $getter (param $w i32) (param $p i32) (param $limit i32) (result i32)
    (if (i32.eq (local.get $w) (i32.const 0)) (then (return (call $get_method (local.get $p) (local.get $limit)))))
    (if (i32.eq (local.get $w) (i32.const 1)) (then (return (call $get_uri (local.get $p) (local.get $limit)))))
    (if (i32.eq (local.get $w) (i32.const 2)) (then (return (call $get_protocol_version (local.get $p) (local.get $limit)))))
    (if (i32.eq (local.get $w) (i32.const 3)) (then (return (call $get_config (local.get $p) (local.get $limit)))))
    (if (i32.eq (local.get $w) (i32.const 4)) (then (return (call $get_source_addr (local.get $p) (local.get $limit)))))
    (if (i32.eq (local.get $w) (i32.const 5)) (then
      (return (i32.wrap_i64 (call $get_header_names (i32.const 0) (local.get $p) (local.get $limit))))))
    (i32.wrap_i64 (call $get_header_values (i32.const 0) (i32.const 32) (i32.const 3) (local.get $p) (local.get $limit))))

  ;; Test 130, one getter: `L:` then `w` when buf_limit == L wrote exactly the value (and not
  ;; a byte past it), else `x`; then `n` when buf_limit == L - 1 wrote nothing and still
  ;; returned L, else `x` (`-` for L = 0); then `;`.
  (func $limit_edges (param $w i32)
    (local $len i32) (local $i i32) (local $ok i32)
    (local.set $len (call $getter (local.get $w) (i32.const 98304) (i32.const 4096)))
    (call $emit_num (i64.extend_i32_u (local.get $len)))
    (call $emit_byte (i32.const 58))
    (memory.fill (i32.const 65536) (i32.const 35) (i32.add (local.get $len) (i32.const 1)))
    (local.set $ok (i32.eq (call $getter (local.get $w) (i32.const 65536) (local.get $len)) (local.get $len)))
    (if (i32.ne (i32.load8_u (i32.add (i32.const 65536) (local.get $len))) (i32.const 35)) (then (local.set $ok (i32.const 0))))
    (local.set $i (i32.const 0))
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (if (i32.ne (i32.load8_u (i32.add (i32.const 65536) (local.get $i))) (i32.load8_u (i32.add (i32.const 98304) (local.get $i))))
          (then (local.set $ok (i32.const 0))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    (call $emit_byte (select (i32.const 119) (i32.const 120) (local.get $ok)))
    (if (i32.eqz (local.get $len)) (then
      (call $emit_byte (i32.const 45))
      (call $emit_byte (i32.const 59))
      (return)))
    (memory.fill (i32.const 65536) (i32.const 35) (local.get $len))
    (local.set $ok (i32.eq (call $getter (local.get $w) (i32.const 65536) (i32.sub (local.get $len) (i32.const 1))) (local.get $len)))
    (local.set $i (i32.const 0))
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (if (i32.ne (i32.load8_u (i32.add (i32.const 65536) (local.get $i))) (i32.const 35))
          (then (local.set $ok (i32.const 0))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    (call $emit_byte (select (i32.const 110) (i32.const 120) (local.get $ok)))
    (call $emit_byte (i32.const 59)))

  (func (export "handle_request") (result i64)
    (local $t i32) (local $r i64) (local $n i32) (local $i i32) (local $b i32)
    (global.set $out (i32.const 0))
    (i32.store8 (i32.const 65536) (i32.const 35)) ;; '#': shows whether a getter wrote
    (global.set $id (call $read_test_id))
    (local.set $t (global.get $id))
    (global.set $served (i32.add (global.get $served) (i32.const 1)))

    ;; -- method --
    (if (i32.eq (local.get $t) (i32.const 1)) (then
      (call $emit (i32.const 65536) (call $get_method (i32.const 65536) (i32.const 64)))
      (return (call $reply))))
    (if (i32.eq (local.get $t) (i32.const 2)) (then
      (return (call $small_value (call $get_method (i32.const 65536) (i32.const 1))))))
    (if (i32.eq (local.get $t) (i32.const 3)) (then
      (call $set_method (i32.const 64) (i32.const 3))
      (return (i64.const 1))))
    (if (i32.eq (local.get $t) (i32.const 4)) (then
      (call $set_method (i32.const 64) (i32.const 0))
      (return (i64.const 1))))
    (if (i32.eq (local.get $t) (i32.const 5)) (then
      (call $set_method (i32.const 304) (i32.const 10))
      (return (i64.const 1))))
    (if (i32.eq (local.get $t) (i32.const 10)) (then
      (call $set_method (i32.const 65536) (call $x_a))
      (call $emit (i32.const 65536) (call $get_method (i32.const 65536) (i32.const 64)))
      (return (call $reply))))

    ;; -- uri --
    (if (i32.eq (local.get $t) (i32.const 6)) (then
      (call $emit (i32.const 65536) (call $get_uri (i32.const 65536) (i32.const 4096)))
      (return (call $reply))))
    (if (i32.eq (local.get $t) (i32.const 7)) (then
      (return (call $small_value (call $get_uri (i32.const 65536) (i32.const 1))))))
    (if (i32.eq (local.get $t) (i32.const 8)) (then
      (call $set_uri (i32.const 80) (i32.const 14))
      (return (i64.const 1))))
    (if (i32.eq (local.get $t) (i32.const 9)) (then
      (call $set_uri (i32.const 65536) (call $x_a))
      (return (i64.const 1))))
    (if (i32.eq (local.get $t) (i32.const 55)) (then
      (call $set_uri (i32.const 65536) (call $x_a))
      (call $emit (i32.const 65536) (call $get_uri (i32.const 65536) (i32.const 4096)))
      (return (call $reply))))
    (if (i32.eq (local.get $t) (i32.const 43)) (then
      (drop (call $get_uri (i32.const 0x30000) (i32.const 4096)))
      (return (i64.const 1))))

    ;; -- protocol version, source address --
    (if (i32.eq (local.get $t) (i32.const 11)) (then
      (call $emit (i32.const 65536) (call $get_protocol_version (i32.const 65536) (i32.const 64)))
      (return (call $reply))))
    (if (i32.eq (local.get $t) (i32.const 40)) (then
      (call $emit (i32.const 65536) (call $get_source_addr (i32.const 65536) (i32.const 64)))
      (return (call $reply))))
    (if (i32.eq (local.get $t) (i32.const 41)) (then
      (return (call $small_value (call $get_source_addr (i32.const 65536) (i32.const 1))))))

    ;; -- header names --
    (if (i32.eq (local.get $t) (i32.const 12)) (then
      (call $emit_count_list (call $get_header_names (i32.const 0) (i32.const 65536) (i32.const 4096)) (i32.const 65536))
      (return (call $reply))))
    (if (i32.eq (local.get $t) (i32.const 13)) (then
      ;; count equals the number of NULs, the list ends in NUL, no upper-case letters.
      (local.set $r (call $get_header_names (i32.const 0) (i32.const 65536) (i32.const 4096)))
      (local.set $n (i32.wrap_i64 (local.get $r)))
      (local.set $b (i32.const 0))
      (block $done
        (loop $l
          (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
          (local.set $t (i32.load8_u (i32.add (i32.const 65536) (local.get $i))))
          (if (i32.eqz (local.get $t)) (then (local.set $b (i32.add (local.get $b) (i32.const 1)))))
          (if (i32.and (i32.ge_u (local.get $t) (i32.const 65)) (i32.le_u (local.get $t) (i32.const 90)))
            (then (local.set $b (i32.const -1000))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $l)))
      (if (i32.and
            (i32.and (i32.gt_u (local.get $n) (i32.const 0))
                     (i32.eqz (i32.load8_u (i32.add (i32.const 65535) (local.get $n)))))
            (i64.eq (i64.extend_i32_s (local.get $b)) (i64.shr_u (local.get $r) (i64.const 32))))
        (then (call $emit (i32.const 400) (i32.const 2)))
        (else (call $emit (i32.const 408) (i32.const 3))))
      (return (call $reply))))
    (if (i32.eq (local.get $t) (i32.const 14)) (then
      (local.set $r (call $get_header_names (i32.const 0) (i32.const 65536) (i32.const 1)))
      (call $emit (i32.const 65536) (i32.const 1))
      (call $emit_byte (i32.const 58))
      (call $emit_num (i64.extend_i32_u (i32.gt_u (i32.wrap_i64 (local.get $r)) (i32.const 1))))
      (return (call $reply))))
    (if (i32.eq (local.get $t) (i32.const 44)) (then
      (drop (call $get_header_names (i32.const 9) (i32.const 65536) (i32.const 4096)))
      (return (i64.const 1))))

    ;; -- header values --
    (if (i32.eq (local.get $t) (i32.const 15)) (then
      (call $emit_count_list
        (call $get_header_values (i32.const 0) (i32.const 32) (i32.const 3) (i32.const 65536) (i32.const 4096))
        (i32.const 65536))
      (return (call $reply))))
    (if (i32.eq (local.get $t) (i32.const 16)) (then
      (call $emit_count_list
        (call $get_header_values (i32.const 0) (i32.const 48) (i32.const 3) (i32.const 65536) (i32.const 4096))
        (i32.const 65536))
      (return (call $reply))))
    (if (i32.eq (local.get $t) (i32.const 17)) (then
      (local.set $r (call $get_header_values (i32.const 0) (i32.const 32) (i32.const 3) (i32.const 65536) (i32.const 1)))
      (call $emit_num (i64.shr_u (local.get $r) (i64.const 32)))
      (call $emit_byte (i32.const 58))
      (call $emit_num (i64.and (local.get $r) (i64.const 0xffffffff)))
      (call $emit_byte (i32.const 58))
      (call $emit (i32.const 65536) (i32.const 1))
      (return (call $reply))))
    (if (i32.eq (local.get $t) (i32.const 18)) (then
      (drop (call $get_header_values (i32.const 0) (i32.const 32) (i32.const 0) (i32.const 65536) (i32.const 4096)))
      (return (i64.const 1))))

    ;; -- header changes --
    (if (i32.eq (local.get $t) (i32.const 19)) (then
      (call $set_header_value (i32.const 0) (i32.const 32) (i32.const 3) (i32.const 128) (i32.const 3))
      (return (i64.const 1))))
    (if (i32.eq (local.get $t) (i32.const 20)) (then
      (call $add_header_value (i32.const 0) (i32.const 32) (i32.const 3) (i32.const 144) (i32.const 5))
      (return (i64.const 1))))
    (if (i32.eq (local.get $t) (i32.const 21)) (then
      (call $remove_header (i32.const 0) (i32.const 32) (i32.const 3))
      (return (i64.const 1))))
    (if (i32.eq (local.get $t) (i32.const 22)) (then
      (call $set_header_value (i32.const 0) (i32.const 112) (i32.const 8) (i32.const 128) (i32.const 3))
      (return (i64.const 1))))
    (if (i32.eq (local.get $t) (i32.const 23)) (then
      (call $set_header_value (i32.const 1) (i32.const 272) (i32.const 14) (i32.const 288) (i32.const 3))
      (return (i64.const 1))))
    (if (i32.eq (local.get $t) (i32.const 56)) (then
      (call $set_header_value (i32.const 0) (i32.const 32) (i32.const 3) (i32.const 128) (i32.const 3))
      (call $emit_count_list
        (call $get_header_values (i32.const 0) (i32.const 32) (i32.const 3) (i32.const 65536) (i32.const 4096))
        (i32.const 65536))
      (return (call $reply))))
    (if (i32.eq (local.get $t) (i32.const 57)) (then
      (call $remove_header (i32.const 0) (i32.const 48) (i32.const 3))
      (call $emit_count_list
        (call $get_header_values (i32.const 0) (i32.const 32) (i32.const 3) (i32.const 65536) (i32.const 4096))
        (i32.const 65536))
      (return (call $reply))))
    (if (i32.eq (local.get $t) (i32.const 59)) (then
      (call $add_header_value (i32.const 0) (i32.const 32) (i32.const 3) (i32.const 144) (i32.const 5))
      (call $emit_count_list
        (call $get_header_values (i32.const 0) (i32.const 32) (i32.const 3) (i32.const 65536) (i32.const 4096))
        (i32.const 65536))
      (return (call $reply))))

    ;; -- the guest's own response --
    (if (i32.eq (local.get $t) (i32.const 24)) (then
      (call $set_status_code (i32.const 418))
      (call $set_header_value (i32.const 1) (i32.const 208) (i32.const 12) (i32.const 224) (i32.const 10))
      (call $write_body (i32.const 1) (i32.const 336) (i32.const 20))
      (return (i64.const 0))))
    (if (i32.eq (local.get $t) (i32.const 25)) (then
      (call $write_body (i32.const 1) (i32.const 192) (i32.const 2))
      (call $write_body (i32.const 1) (i32.const 200) (i32.const 2))
      (return (i64.const 0))))
    (if (i32.eq (local.get $t) (i32.const 26)) (then
      (return (i64.const 0))))
    (if (i32.eq (local.get $t) (i32.const 27)) (then
      (call $set_status_code (i32.const 99))
      (return (i64.const 0))))
    (if (i32.eq (local.get $t) (i32.const 60)) (then
      ;; ctx set but next not asked: the low 32 bits decide.
      (call $write_body (i32.const 1) (i32.const 336) (i32.const 20))
      (return (i64.const 0x1000000000))))

    ;; -- request body --
    (if (i32.eq (local.get $t) (i32.const 28)) (then
      (call $write_body (i32.const 0) (i32.const 176) (i32.const 8))
      (return (i64.const 1))))
    (if (i32.eq (local.get $t) (i32.const 29)) (then
      (call $emit (i32.const 65536) (call $read_all (i32.const 0) (i32.const 4096)))
      (return (call $reply))))
    (if (i32.eq (local.get $t) (i32.const 30)) (then
      (block $done
        (loop $l
          (local.set $r (call $read_body (i32.const 0) (i32.const 65536) (i32.const 3)))
          (call $emit (i32.const 65536) (i32.wrap_i64 (local.get $r)))
          (call $emit_byte (i32.const 124))
          (br_if $done (i64.ne (i64.shr_u (local.get $r) (i64.const 32)) (i64.const 0)))
          (br_if $done (i32.eqz (i32.wrap_i64 (local.get $r))))
          (br $l)))
      (return (call $reply))))
    (if (i32.eq (local.get $t) (i32.const 31)) (then
      (drop (call $read_body (i32.const 0) (i32.const 65536) (i32.const 0)))
      (return (i64.const 1))))
    (if (i32.eq (local.get $t) (i32.const 32)) (then
      (drop (call $read_body (i32.const 0) (i32.const 65536) (i32.const 5)))
      (return (i64.const 1))))
    (if (i32.eq (local.get $t) (i32.const 33)) (then
      (drop (call $enable_features (i32.const 1)))
      (drop (call $read_body (i32.const 0) (i32.const 65536) (i32.const 5)))
      (return (i64.const 1))))
    (if (i32.eq (local.get $t) (i32.const 52)) (then
      (drop (call $read_body (i32.const 1) (i32.const 65536) (i32.const 64)))
      (return (i64.const 1))))

    ;; -- features, config, logging --
    (if (i32.eq (local.get $t) (i32.const 34)) (then
      (call $emit_num (i64.extend_i32_u (call $enable_features (i32.const 15))))
      (return (call $reply))))
    (if (i32.eq (local.get $t) (i32.const 35)) (then
      (call $emit_num (i64.extend_i32_u (call $enable_features (i32.const 0))))
      (return (call $reply))))
    (if (i32.eq (local.get $t) (i32.const 36)) (then
      (call $emit (i32.const 65536) (call $get_config (i32.const 65536) (i32.const 4096)))
      (return (call $reply))))
    (if (i32.eq (local.get $t) (i32.const 37)) (then
      (return (call $small_value (call $get_config (i32.const 65536) (i32.const 1))))))
    (if (i32.eq (local.get $t) (i32.const 38)) (then
      (call $emit_num (i64.extend_i32_u (call $log_enabled (i32.const 3))))
      (return (call $reply))))
    (if (i32.eq (local.get $t) (i32.const 39)) (then
      (call $log (i32.const 2) (i32.const 0x1fff0) (i32.const 4096))
      (call $emit (i32.const 384) (i32.const 6))
      (return (call $reply))))

    ;; -- traps --
    (if (i32.eq (local.get $t) (i32.const 42)) (then
      unreachable))

    ;; -- status --
    (if (i32.eq (local.get $t) (i32.const 48)) (then
      (drop (call $get_status_code))
      (return (i64.const 1))))

    ;; -- after next (see handle_response) --
    (if (i32.or (i32.eq (local.get $t) (i32.const 45))
          (i32.or (i32.eq (local.get $t) (i32.const 46)) (i32.eq (local.get $t) (i32.const 47)))) (then
      (drop (call $enable_features (i32.const 2)))
      (return (i64.const 0x2a00000001))))

    ;; -- trailers --
    (if (i32.eq (local.get $t) (i32.const 49)) (then
      (call $emit_count_list (call $get_header_names (i32.const 3) (i32.const 65536) (i32.const 4096)) (i32.const 65536))
      (return (call $reply))))
    (if (i32.eq (local.get $t) (i32.const 50)) (then
      (call $emit_num (i64.extend_i32_u (call $enable_features (i32.const 4))))
      (call $emit_byte (i32.const 59))
      (call $emit_count_list (call $get_header_names (i32.const 2) (i32.const 65536) (i32.const 4096)) (i32.const 65536))
      (return (call $reply))))
    (if (i32.eq (local.get $t) (i32.const 51)) (then
      (call $set_header_value (i32.const 3) (i32.const 32) (i32.const 3) (i32.const 128) (i32.const 3))
      (return (i64.const 1))))
    ;; Instance reuse: features enabled in one request are gone in the next (the set in force
    ;; before this request enables buffer_response), and the instance's own state stays.
    (if (i32.eq (local.get $t) (i32.const 83)) (then
      (call $emit_num (i64.extend_i32_u (call $enable_features (i32.const 0))))
      (drop (call $enable_features (i32.const 2)))
      (return (call $reply))))
    (if (i32.eq (local.get $t) (i32.const 84)) (then
      (call $emit_num (i64.extend_i32_u (global.get $served)))
      (return (call $reply))))
    ;; Request trailers with buffer_request, after reading the body (trailers follow it): the
    ;; features, then the trailer names.
    (if (i32.eq (local.get $t) (i32.const 80)) (then
      (call $emit_num (i64.extend_i32_u (call $enable_features (i32.const 5))))
      (call $emit_byte (i32.const 59))
      (drop (call $read_all (i32.const 0) (i32.const 4096)))
      (call $emit_count_list (call $get_header_names (i32.const 2) (i32.const 65536) (i32.const 4096)) (i32.const 65536))
      (return (call $reply))))
    ;; Response trailers (see handle_response).
    (if (i32.eq (local.get $t) (i32.const 81)) (then
      (drop (call $enable_features (i32.const 6)))
      (return (i64.const 1))))
    ;; Sets request trailer x-a: set (with buffer_request) and goes on.
    (if (i32.eq (local.get $t) (i32.const 82)) (then
      (drop (call $enable_features (i32.const 5)))
      (call $set_header_value (i32.const 2) (i32.const 32) (i32.const 3) (i32.const 128) (i32.const 3))
      (return (i64.const 1))))

    ;; -- a Content-Length the guest declares on a buffered body it does not write --
    ;; 90..92: buffer_response, then the response phase declares the length (handle_response).
    (if (i32.and (i32.ge_u (local.get $t) (i32.const 90)) (i32.le_u (local.get $t) (i32.const 92))) (then
      (drop (call $enable_features (i32.const 2)))
      (return (i64.const 0x2a00000001))))
    ;; buffer_request; request content-length: the value of x-a; next.
    (if (i32.eq (local.get $t) (i32.const 93)) (then
      (drop (call $enable_features (i32.const 1)))
      (call $set_header_value (i32.const 0) (i32.const 512) (i32.const 14) (i32.const 65536) (call $x_a))
      (return (i64.const 1))))
    ;; buffer_request; request content-length: 0, then a body written: the body wins.
    (if (i32.eq (local.get $t) (i32.const 94)) (then
      (drop (call $enable_features (i32.const 1)))
      (call $set_header_value (i32.const 0) (i32.const 512) (i32.const 14) (i32.const 528) (i32.const 1))
      (call $write_body (i32.const 0) (i32.const 176) (i32.const 8))
      (return (i64.const 1))))

    ;; -- log at every level (test ids above 60 are spaced out: other behaviours may come) --
    (if (i32.eq (local.get $t) (i32.const 70)) (then
      (call $log (i32.const -1) (i32.const 416) (i32.const 16))
      (call $log (i32.const 0) (i32.const 432) (i32.const 15))
      (call $log (i32.const 1) (i32.const 448) (i32.const 15))
      (call $log (i32.const 2) (i32.const 464) (i32.const 16))
      (call $log (i32.const 3) (i32.const 480) (i32.const 15))
      (call $emit (i32.const 384) (i32.const 6))
      (return (call $reply))))

    ;; ---- issue 17 part 2 (ids 100..139) ----
    ;; 100..111, 116, 117: next with no feature; handle_response then makes a call the rules
    ;; around next forbid there (it must trap).
    (if (i32.or (i32.and (i32.ge_u (local.get $t) (i32.const 100)) (i32.le_u (local.get $t) (i32.const 111)))
          (i32.or (i32.eq (local.get $t) (i32.const 116)) (i32.eq (local.get $t) (i32.const 117)))) (then
      (return (i64.const 1))))
    ;; 112: write_body(response) before next, then next.
    (if (i32.eq (local.get $t) (i32.const 112)) (then
      (call $write_body (i32.const 1) (i32.const 336) (i32.const 20))
      (return (i64.const 1))))
    ;; 114: buffer_response and next; handle_response traps (unreachable). 119: the same;
    ;; handle_response logs `is_error=N` at info.
    (if (i32.or (i32.eq (local.get $t) (i32.const 114)) (i32.eq (local.get $t) (i32.const 119))) (then
      (drop (call $enable_features (i32.const 2)))
      (return (i64.const 1))))
    ;; 115: the guest's own answer, a WAF's block: 403, content-length 0, nothing written.
    (if (i32.eq (local.get $t) (i32.const 115)) (then
      (call $set_status_code (i32.const 403))
      (call $set_header_value (i32.const 1) (i32.const 512) (i32.const 14) (i32.const 528) (i32.const 1))
      (return (i64.const 0))))
    ;; 118: buffer_request; write_body(request) twice (replace, then append), then next.
    (if (i32.eq (local.get $t) (i32.const 118)) (then
      (drop (call $enable_features (i32.const 1)))
      (call $write_body (i32.const 0) (i32.const 192) (i32.const 2))
      (call $write_body (i32.const 0) (i32.const 200) (i32.const 2))
      (return (i64.const 1))))
    ;; 130: buf_limit == length writes, length - 1 writes nothing, for every single-value
    ;; getter and both lists (see $limit_edges).
    (if (i32.eq (local.get $t) (i32.const 130)) (then
      (local.set $i (i32.const 0))
      (block $done
        (loop $l
          (br_if $done (i32.gt_u (local.get $i) (i32.const 6)))
          (call $limit_edges (local.get $i))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $l)))
      (return (call $reply))))

    ;; Anything else: pass the request on unchanged.
    (i64.const 1))

  (func (export "handle_response") (param $ctx i32) (param $is_error i32)
    (local $n i32)
    (global.set $out (i32.const 0))
    (if (i32.eq (global.get $id) (i32.const 45)) (then
      (call $emit_num (i64.extend_i32_u (call $get_status_code)))
      (call $header_from_out (i32.const 240) (i32.const 8))
      (local.set $n (call $read_all (i32.const 1) (i32.const 7)))
      (call $emit_byte (i32.const 91))
      (call $emit (i32.const 65536) (local.get $n))
      (call $emit_byte (i32.const 93))
      (call $write_body (i32.const 1) (i32.const 8192) (global.get $out))))
    (if (i32.eq (global.get $id) (i32.const 46)) (then
      (call $emit_num (i64.extend_i32_u (local.get $ctx)))
      (call $header_from_out (i32.const 256) (i32.const 5))
      (call $emit_num (i64.extend_i32_u (local.get $is_error)))
      (call $header_from_out (i32.const 368) (i32.const 10))))
    (if (i32.eq (global.get $id) (i32.const 47)) (then
      (call $set_status_code (i32.const 202))))
    ;; A WAF's block: 403, content-length 0, no body written (TinyGo's `Write(nil)`).
    (if (i32.eq (global.get $id) (i32.const 90)) (then
      (call $set_status_code (i32.const 403))
      (call $set_header_value (i32.const 1) (i32.const 512) (i32.const 14) (i32.const 528) (i32.const 1))))
    ;; content-length: the value of x-a, no body written.
    (if (i32.eq (global.get $id) (i32.const 91)) (then
      (call $set_header_value (i32.const 1) (i32.const 512) (i32.const 14) (i32.const 65536) (call $x_a))))
    ;; content-length: 0, then a body written: the body wins.
    (if (i32.eq (global.get $id) (i32.const 92)) (then
      (call $set_header_value (i32.const 1) (i32.const 512) (i32.const 14) (i32.const 528) (i32.const 1))
      (call $write_body (i32.const 1) (i32.const 336) (i32.const 20))))
    ;; -- issue 17 part 2: calls that must trap after next --
    (if (i32.eq (global.get $id) (i32.const 100)) (then (call $set_method (i32.const 64) (i32.const 3))))
    (if (i32.eq (global.get $id) (i32.const 101)) (then (call $set_uri (i32.const 80) (i32.const 14))))
    (if (i32.eq (global.get $id) (i32.const 102)) (then
      (call $set_header_value (i32.const 0) (i32.const 32) (i32.const 3) (i32.const 128) (i32.const 3))))
    (if (i32.eq (global.get $id) (i32.const 103)) (then
      (call $add_header_value (i32.const 0) (i32.const 32) (i32.const 3) (i32.const 128) (i32.const 3))))
    (if (i32.eq (global.get $id) (i32.const 104)) (then (call $remove_header (i32.const 0) (i32.const 32) (i32.const 3))))
    (if (i32.eq (global.get $id) (i32.const 105)) (then (call $write_body (i32.const 0) (i32.const 192) (i32.const 2))))
    (if (i32.eq (global.get $id) (i32.const 106)) (then
      (drop (call $read_body (i32.const 0) (i32.const 65536) (i32.const 16)))))
    (if (i32.eq (global.get $id) (i32.const 107)) (then
      (call $set_header_value (i32.const 1) (i32.const 32) (i32.const 3) (i32.const 128) (i32.const 3))))
    (if (i32.eq (global.get $id) (i32.const 108)) (then (call $write_body (i32.const 1) (i32.const 192) (i32.const 2))))
    (if (i32.eq (global.get $id) (i32.const 109)) (then (call $set_status_code (i32.const 202))))
    (if (i32.eq (global.get $id) (i32.const 110)) (then (drop (call $get_status_code))))
    (if (i32.eq (global.get $id) (i32.const 111)) (then (call $remove_header (i32.const 1) (i32.const 32) (i32.const 3))))
    (if (i32.eq (global.get $id) (i32.const 116)) (then
      (call $add_header_value (i32.const 1) (i32.const 32) (i32.const 3) (i32.const 128) (i32.const 3))))
    (if (i32.eq (global.get $id) (i32.const 117)) (then
      (drop (call $read_body (i32.const 1) (i32.const 65536) (i32.const 16)))))
    (if (i32.eq (global.get $id) (i32.const 114)) (then unreachable))
    (if (i32.eq (global.get $id) (i32.const 119)) (then
      (call $emit (i32.const 544) (i32.const 9))
      (call $emit_num (i64.extend_i32_u (local.get $is_error)))
      (call $log (i32.const 0) (i32.const 8192) (global.get $out))
      (global.set $out (i32.const 0))))
    ;; The upstream's trailer names in header x-trailer-names; trailer x-a: set added.
    (if (i32.eq (global.get $id) (i32.const 81)) (then
      (call $emit_count_list (call $get_header_names (i32.const 3) (i32.const 65536) (i32.const 4096)) (i32.const 65536))
      (call $header_from_out (i32.const 496) (i32.const 15))
      (call $set_header_value (i32.const 3) (i32.const 32) (i32.const 3) (i32.const 128) (i32.const 3)))))
)
