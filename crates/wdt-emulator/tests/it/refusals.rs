//! Every refusal path, answered with the vendor's status/code and message.

use serde_json::{Value, json};

use crate::support::{Raw, now, php_query, start_small};

fn with(params: &[(String, String)], key: &str, value: Option<&str>) -> Vec<(String, String)> {
    let mut p: Vec<(String, String)> = params.iter().filter(|(k, _)| k != key).cloned().collect();
    if let Some(v) = value {
        p.insert(0, (key.to_owned(), v.to_owned()));
    }
    p
}

/// Re-signs after changing the public parameters, so only the intended check can fail.
fn resign(params: &[(String, String)], body: &str, secret: &str) -> Vec<(String, String)> {
    let secret = wdt_sign::FlagshipSecret::parse(secret).unwrap();
    let mut p: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "sign")
        .cloned()
        .collect();
    let sign = wdt_sign::sign_flagship(
        p.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        body,
        &secret,
    );
    p.push(("sign".into(), sign));
    p
}

#[tokio::test]
async fn flagship_refusals() {
    let emu = start_small().await;
    let raw = Raw::new(&emu);
    let body = "[2447,false]";
    let good = Raw::flagship_params("sales.StockSync.calcStock", body, now());
    let status = |v: &Value| {
        (
            v["status"].as_i64().unwrap(),
            v["message"].as_str().unwrap_or_default().to_owned(),
        )
    };

    for key in ["sid", "key", "salt", "method", "v", "timestamp", "sign"] {
        let answer = raw.flagship_with(&with(&good, key, None), body).await;
        assert_eq!(status(&answer), (1, "参数错误".into()), "missing {key}");
    }
    let answer = raw
        .flagship_with(
            &resign(
                &with(&good, "sid", Some("nobody")),
                body,
                crate::support::APPSECRET,
            ),
            body,
        )
        .await;
    assert_eq!(status(&answer), (1, "sid is not exists".into()));
    let answer = raw
        .flagship_with(
            &resign(
                &with(&good, "key", Some("other")),
                body,
                crate::support::APPSECRET,
            ),
            body,
        )
        .await;
    assert_eq!(status(&answer), (1, "app auth fail".into()));
    let answer = raw
        .flagship_with(
            &resign(
                &with(&good, "v", Some("2.0")),
                body,
                crate::support::APPSECRET,
            ),
            body,
        )
        .await;
    assert_eq!(status(&answer), (8, "版本错误".into()));
    let millis = (now() * 1000).to_string();
    let answer = raw
        .flagship_with(
            &resign(
                &with(&good, "timestamp", Some(&millis)),
                body,
                crate::support::APPSECRET,
            ),
            body,
        )
        .await;
    assert_eq!(
        status(&answer),
        (1, format!("For input string: \"{millis}\"")),
        "a millisecond Unix time"
    );
    for skew in [-121, 121] {
        let ts = (now() + skew - wdt_sign::FLAGSHIP_EPOCH).to_string();
        let answer = raw
            .flagship_with(
                &resign(
                    &with(&good, "timestamp", Some(&ts)),
                    body,
                    crate::support::APPSECRET,
                ),
                body,
            )
            .await;
        assert_eq!(status(&answer), (7, "时间戳错误".into()), "skew {skew}");
    }
    let ts = (now() + 100 - wdt_sign::FLAGSHIP_EPOCH).to_string();
    let answer = raw
        .flagship_with(
            &resign(
                &with(&good, "timestamp", Some(&ts)),
                body,
                crate::support::APPSECRET,
            ),
            body,
        )
        .await;
    assert_eq!(answer["status"], 0, "100 s is inside the window: {answer}");
    let answer = raw
        .flagship_with(&resign(&good, body, "wrong:testsalt"), body)
        .await;
    assert_eq!(status(&answer), (1, "验证失败".into()), "wrong secret");
    let answer = raw
        .flagship_with(
            &resign(
                &with(&good, "salt", Some("other")),
                body,
                "testsecret:other",
            ),
            body,
        )
        .await;
    assert_eq!(status(&answer), (1, "验证失败".into()), "wrong salt");
    let answer = raw.flagship_with(&good, "[2447, false]").await;
    assert_eq!(
        status(&answer),
        (1, "验证失败".into()),
        "the body is signed byte for byte"
    );

    let call = |method: &'static str, body: &'static str| {
        let raw = raw.clone();
        async move { raw.call(method, body).await }
    };
    assert_eq!(
        status(&call("sales.Nope.method", "[]").await),
        (100, "接口不存在: sales.Nope.method".into())
    );
    assert_eq!(
        status(&call("sales.StockSync.calcStock", "{\"a\":1}").await),
        (1, "参数错误".into())
    );
    assert_eq!(
        status(&call("sales.StockSync.calcStock", "not json").await),
        (1, "参数错误".into())
    );
    assert_eq!(
        status(&call("sales.StockSync.calcStock", "[2447]").await),
        (1, "invalid argument count".into())
    );
    assert_eq!(
        status(&call("sales.StockSync.calcStock", "[2447,false,1]").await),
        (1, "invalid argument count".into())
    );
    assert_eq!(
        status(&call("sales.StockSync.calcStock", "[\"abc\",false]").await),
        (1, "argument type mismatch".into())
    );
    assert_eq!(
        status(&call("sales.StockSync.calcStock", "[2447,\"maybe\"]").await),
        (1, "argument type mismatch".into())
    );
    assert_eq!(
        status(&call("sales.StockSync.syncSuccess", "[2447,[]]").await),
        (1, "argument type mismatch".into()),
        "[] is not a map"
    );
    assert_eq!(
        status(&call("sales.StockSync.getSelfWaitSyncIdListOpen", "[9,0]").await).0,
        100
    );
    assert_eq!(
        status(&call("sales.StockSync.getSelfWaitSyncIdListOpen", "[5001,0]").await).0,
        100
    );
    assert_eq!(
        status(&call("system.Core.now", "[1]").await),
        (1, "invalid argument count".into())
    );
    assert_eq!(
        status(
            &call(
                "wms.StockPd.stockSyncByPd",
                "[{\"warehouse_no\":\"WH-SH01\",\"remark\":\"\"},[]]"
            )
            .await
        ),
        (100, "pdOrder缺少defect_mode".into())
    );

    // Numbers as strings and 0/1 booleans are what Java accepts.
    assert_eq!(
        call(
            "sales.StockSync.getSelfWaitSyncIdListOpen",
            "[\"500\",\"0\"]"
        )
        .await["status"],
        0
    );
    let forced = call("sales.StockSync.calcStock", "[\"2447\",1]").await;
    assert_eq!(
        forced["status"], 0,
        "1 is true: a forced calculation always answers: {forced}"
    );
    assert_eq!(forced["data"]["rec_id"], 2447);
    // Quantities beyond decimal(19,4) are refused, and nothing breaks afterwards.
    let huge = call(
        "wms.StockPd.stockSyncByPd",
        r#"[{"warehouse_no":"WH-SH01","defect_mode":0,"remark":""},[{"spec_no":"G00001-01","remark":"","new_num":"1e27","defect":false}]]"#,
    )
    .await;
    assert_eq!(huge["status"], 100, "{huge}");
    assert_eq!(
        call("sales.StockSync.calcStock", "[2447,true]").await["status"],
        0
    );
}

#[tokio::test]
async fn enterprise_refusals() {
    let emu = start_small().await;
    let raw = Raw::new(&emu);
    let fields = [("spec_no", "G00001-01")];
    let good = Raw::enterprise_fields(&fields, now());
    let form = "application/x-www-form-urlencoded";
    let code = |v: &Value| {
        (
            v["code"].as_i64().unwrap(),
            v["message"].as_str().unwrap_or_default().to_owned(),
        )
    };
    let post = |name: &'static str, ct: &'static str, body: String| {
        let raw = raw.clone();
        async move { raw.enterprise_with(name, ct, body).await }
    };

    assert_eq!(
        code(&post("stock_query_detail.php", form, php_query(&good)).await).0,
        0
    );
    assert_eq!(
        code(
            &post(
                "stock_query_detail.php",
                "application/json",
                php_query(&good)
            )
            .await
        ),
        (1001, "参数错误: 缺少sid".into())
    );
    for key in ["sid", "appkey", "timestamp", "sign"] {
        let body = php_query(&with(&good, key, None));
        assert_eq!(
            code(&post("stock_query_detail.php", form, body).await),
            (1001, format!("参数错误: 缺少{key}"))
        );
    }
    let dup = format!("{}&spec_no=x", php_query(&good));
    assert_eq!(
        code(&post("stock_query_detail.php", form, dup).await).0,
        1001
    );
    let bad_utf8 = format!("{}&barcode=%FF", php_query(&good));
    assert_eq!(
        code(&post("stock_query_detail.php", form, bad_utf8).await).0,
        1001
    );
    let resigned = |f: Vec<(String, String)>| {
        let mut f: Vec<(String, String)> = f.into_iter().filter(|(k, _)| k != "sign").collect();
        let sign = wdt_sign::sign_enterprise(
            f.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            crate::support::E_SECRET,
        );
        f.push(("sign".into(), sign));
        php_query(&f)
    };
    assert_eq!(
        code(
            &post(
                "stock_query_detail.php",
                form,
                resigned(with(&good, "sid", Some("x")))
            )
            .await
        ),
        (1002, "卖家账号不存在".into())
    );
    assert_eq!(
        code(
            &post(
                "stock_query_detail.php",
                form,
                resigned(with(&good, "appkey", Some("x")))
            )
            .await
        ),
        (1003, "接口账号不存在".into())
    );
    for skew in [-301, 301] {
        let ts = (now() + skew).to_string();
        assert_eq!(
            code(
                &post(
                    "stock_query_detail.php",
                    form,
                    resigned(with(&good, "timestamp", Some(&ts)))
                )
                .await
            )
            .0,
            1004
        );
    }
    let tampered = php_query(&with(&good, "spec_no", Some("G00001-02")));
    assert_eq!(
        code(&post("stock_query_detail.php", form, tampered).await),
        (1005, "签名错误".into())
    );
    let overflow = resigned(with(&good, "timestamp", Some("-9223372036854775808")));
    assert_eq!(
        code(&post("stock_query_detail.php", form, overflow).await).0,
        1004,
        "an absurd timestamp is refused"
    );
    assert_eq!(
        code(&post("trade_query.php", form, php_query(&good)).await),
        (1007, "接口不存在: trade_query.php".into())
    );

    let q = |f: &'static [(&'static str, &'static str)]| {
        let raw = raw.clone();
        async move { raw.query(f).await }
    };
    assert_eq!(
        code(&q(&[("page_size", "101"), ("is_all", "1")]).await).0,
        1001
    );
    assert_eq!(
        code(&q(&[("page_size", "0"), ("is_all", "1")]).await).0,
        1001
    );
    assert_eq!(
        code(&q(&[("page_no", "-1"), ("is_all", "1")]).await).0,
        1001
    );
    assert_eq!(
        code(&q(&[("start_time", "2026-01-01 00:00:00")]).await).0,
        1001,
        "start without end"
    );
    assert_eq!(
        code(
            &q(&[
                ("start_time", "2026/01/01"),
                ("end_time", "2026-01-02 00:00:00")
            ])
            .await
        )
        .0,
        1001
    );
    assert_eq!(
        code(
            &q(&[
                ("start_time", "2026-01-02 00:00:00"),
                ("end_time", "2026-01-01 00:00:00")
            ])
            .await
        )
        .0,
        1001
    );
    assert_eq!(code(&q(&[]).await).0, 1001, "no window, no key");
    assert_eq!(
        q(&[
            ("start_time", "2026-01-01 00:00:00"),
            ("end_time", "2026-01-31 00:00:01")
        ])
        .await,
        json!({"code": 2104, "message": "start_time与end_time时间跨度不能超过最大范围 30天"})
    );
    // spec_no and barcode skip the time checks altogether.
    assert_eq!(
        code(
            &q(&[
                ("spec_no", "G00001-01"),
                ("start_time", "2020-01-01 00:00:00"),
                ("end_time", "2026-01-01 00:00:00")
            ])
            .await
        )
        .0,
        0
    );
}
