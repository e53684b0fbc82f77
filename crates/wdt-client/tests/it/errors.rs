//! Each error class, from a mock vendor on loopback; and no secret in any message.

use std::time::Duration;

use wdt_client::enterprise::StockQueryDetail;
use wdt_client::flagship::{CalcStock, CancelSync};
use wdt_client::{Family, RateLimitKind, VendorError, WdtClient};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{
    ENTERPRISE_SECRET, SALT, SECRET, client, closed_port_uri, enterprise_creds,
    enterprise_creds_at, flagship_creds, flagship_creds_at, json_response,
};

async fn answer(template: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(template)
        .mount(&server)
        .await;
    server
}

async fn calc(server: &MockServer) -> VendorError {
    client(server)
        .call(&CalcStock {
            api_goods_id: 1,
            force_sync: false,
        })
        .await
        .unwrap_err()
}

fn assert_no_secrets(text: &str) {
    for needle in [SECRET, SALT, ENTERPRISE_SECRET, "sign=", "salt="] {
        assert!(!text.contains(needle), "{needle:?} leaked into {text:?}");
    }
}

#[tokio::test]
async fn credentials_refused() {
    for (status, message) in [
        (1, "验证失败"),
        (1, "app auth fail"),
        (1, "sid is not exists"),
        (6, "ip限制"),
        (8, "版本错误"),
    ] {
        let server = answer(json_response(format!(
            r#"{{"status":{status},"message":"{message}"}}"#
        )))
        .await;
        let err = calc(&server).await;
        assert_eq!(
            err,
            VendorError::Credentials {
                family: Family::Flagship,
                status,
                message: message.into()
            },
            "{status} {message}"
        );
        assert!(!err.is_transient());
        assert!(err.to_string().contains(message));
        assert_no_secrets(&err.to_string());
        assert_no_secrets(&format!("{err:?}"));
    }
}

#[tokio::test]
async fn clock_refused() {
    let server = answer(json_response(r#"{"status":7,"message":"时间戳错误"}"#)).await;
    assert!(matches!(
        calc(&server).await,
        VendorError::ClockSkew { status: 7, .. }
    ));
}

#[tokio::test]
async fn rate_limited_with_either_message() {
    for (message, kind) in [
        (
            "超过每分钟最大调用频率限制，请稍后重试",
            RateLimitKind::CallsPerMinute,
        ),
        (
            "超过每分钟最大并发次数限制，请稍后重试",
            RateLimitKind::ConcurrencyPerMinute,
        ),
    ] {
        let server = answer(json_response(format!(
            r#"{{"status":100,"message":"{message}"}}"#
        )))
        .await;
        let err = calc(&server).await;
        assert_eq!(
            err,
            VendorError::RateLimited {
                family: Family::Flagship,
                kind,
                status: 100,
                message: message.into()
            }
        );
        assert!(err.is_transient());
    }
    let server = answer(json_response(
        r#"{"code":100,"message":"超过每分钟最大调用频率限制，请稍后重试"}"#,
    ))
    .await;
    let err = client(&server)
        .query(&StockQueryDetail::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            VendorError::RateLimited {
                family: Family::Enterprise,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn business_refusal_keeps_the_vendor_message() {
    let server = answer(json_response(r#"{"status":100,"message":"取消失败"}"#)).await;
    let err = client(&server)
        .call(&CancelSync {
            api_goods_id: 1,
            stock_change_count: 3,
        })
        .await
        .unwrap_err();
    assert_eq!(err.vendor_status(), Some(100));
    assert_eq!(err.vendor_message(), Some("取消失败"));
    assert!(err.to_string().contains("status 100: 取消失败"), "{err}");
}

#[tokio::test]
async fn enterprise_refusals() {
    let server = answer(json_response(
        r#"{"code":"2104","message":"start_time与end_time时间跨度不能超过最大范围 30天"}"#,
    ))
    .await;
    let err = client(&server)
        .query(&StockQueryDetail::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            VendorError::Rejected {
                family: Family::Enterprise,
                status: 2104,
                ..
            }
        ),
        "{err:?}"
    );
    let server = answer(json_response(r#"{"code":1099,"message":"签名错误"}"#)).await;
    let err = client(&server)
        .query(&StockQueryDetail::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            VendorError::Credentials {
                family: Family::Enterprise,
                status: 1099,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn http_errors() {
    let server =
        answer(ResponseTemplate::new(502).set_body_string("<html>Bad Gateway</html>")).await;
    let err = calc(&server).await;
    assert_eq!(
        err,
        VendorError::Http {
            family: Family::Flagship,
            status: 502,
            excerpt: "<html>Bad Gateway</html>".into()
        }
    );
    assert!(err.is_transient());
    // A vendor envelope in an error response still says what happened.
    let server =
        answer(ResponseTemplate::new(500).set_body_string(
            r#"{"status":100,"message":"超过每分钟最大调用频率限制，请稍后重试"}"#,
        ))
        .await;
    assert!(matches!(
        calc(&server).await,
        VendorError::RateLimited { .. }
    ));
}

#[tokio::test]
async fn undecodable_bodies() {
    let server = answer(json_response("<html>maintenance</html>")).await;
    let err = calc(&server).await;
    let VendorError::Decode { excerpt, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(excerpt, "<html>maintenance</html>");

    let server = answer(json_response(r#"{"status":0,"data":{"rec_id":"x"}}"#)).await;
    assert!(matches!(calc(&server).await, VendorError::Decode { .. }));

    let server = answer(json_response(r#"{"data":{}}"#)).await;
    let err = calc(&server).await;
    assert!(err.to_string().contains("no `status`"), "{err}");

    let server = answer(json_response(r#"{"status":0,"data":{"rec_id":1"#)).await;
    assert!(
        matches!(calc(&server).await, VendorError::Decode { .. }),
        "truncated body"
    );

    let server = answer(json_response(r#"{"stocks":[]}"#)).await;
    let err = client(&server)
        .query(&StockQueryDetail::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no `code`"), "{err}");
}

#[tokio::test]
async fn oversized_answer() {
    let server = answer(json_response(format!(
        r#"{{"status":0,"data":"{}"}}"#,
        "x".repeat(10_000)
    )))
    .await;
    let c = WdtClient::builder()
        .flagship(flagship_creds(&server))
        .max_response_bytes(1000)
        .build()
        .unwrap();
    let err = c
        .call(&CalcStock {
            api_goods_id: 1,
            force_sync: false,
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("larger than 1000 bytes"), "{err}");
}

#[tokio::test]
async fn timeout() {
    let server = answer(json_response(r#"{"status":0}"#).set_delay(Duration::from_secs(3))).await;
    let c = WdtClient::builder()
        .flagship(flagship_creds(&server))
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let err = c
        .call(&CancelSync {
            api_goods_id: 1,
            stock_change_count: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(
        err,
        VendorError::Timeout {
            family: Family::Flagship,
            after: Duration::from_millis(200),
            connected: true,
        }
    );
    assert!(err.is_transient());
    assert!(
        err.may_have_acted(),
        "the request was sent and its answer never came"
    );
}

#[tokio::test]
async fn connection_refused() {
    let uri = closed_port_uri();
    let creds = flagship_creds_at(&uri);
    let ent = enterprise_creds_at(&uri);
    let c = WdtClient::builder()
        .flagship(creds)
        .enterprise(ent)
        .build()
        .unwrap();
    let err = c
        .call(&CalcStock {
            api_goods_id: 1,
            force_sync: false,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            VendorError::Transport {
                family: Family::Flagship,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert!(
        !err.may_have_acted(),
        "nothing was sent to a refused connection: {err:?}"
    );
    assert_no_secrets(&err.to_string());
    assert_no_secrets(&format!("{err:?}"));
    let err = c.query(&StockQueryDetail::default()).await.unwrap_err();
    assert!(
        matches!(
            err,
            VendorError::Transport {
                family: Family::Enterprise,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn family_not_configured() {
    let server = MockServer::start().await;
    let c = WdtClient::builder()
        .flagship(flagship_creds(&server))
        .build()
        .unwrap();
    let err = c.query(&StockQueryDetail::default()).await.unwrap_err();
    assert_eq!(
        err,
        VendorError::NotConfigured {
            family: Family::Enterprise
        }
    );
    assert!(
        server.received_requests().await.unwrap().is_empty(),
        "nothing is sent"
    );
}

#[tokio::test]
async fn raw_call_refuses_non_arrays_before_sending() {
    let server = MockServer::start().await;
    let c = client(&server);
    for args in ["{}", "2447", "[1,", ""] {
        let err = c
            .call_raw("sales.StockSync.calcStock", args, None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, VendorError::InvalidRequest { .. }),
            "{args}: {err:?}"
        );
    }
    assert!(matches!(
        c.call_raw("a b", "[]", None).await,
        Err(VendorError::InvalidRequest { .. })
    ));
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[test]
fn debug_output_hides_secrets() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(MockServer::start());
    let c = client(&server);
    let text = format!(
        "{c:?} {:?} {:?}",
        flagship_creds(&server),
        enterprise_creds(&server)
    );
    assert_no_secrets(&text);
    assert!(
        text.contains("wdtapi3"),
        "non-secret identity stays visible: {text}"
    );
    let prepared = wdt_client::prepare_flagship(
        &flagship_creds(&server),
        "m",
        "[]".into(),
        None,
        1_700_000_000,
    );
    assert!(prepared.url.contains(SALT), "the real URL carries the salt");
    assert_no_secrets(&format!("{prepared:?}"));
}

#[test]
fn bad_configuration_says_what_to_fix() {
    use wdt_client::{EnterpriseCredentials, FlagshipCredentials, SecretString};
    let s = SecretString::from("a:b");
    let err = FlagshipCredentials::new("wdt.wangdian.cn/openapi", "sid", "key", &s).unwrap_err();
    assert!(err.to_string().contains("flagship URL"), "{err}");
    let err = FlagshipCredentials::new("ftp://x/openapi", "sid", "key", &s).unwrap_err();
    assert!(err.to_string().contains("http"), "{err}");
    let err = FlagshipCredentials::new("http://x/openapi?sid=1", "sid", "key", &s).unwrap_err();
    assert!(err.to_string().contains("query"), "{err}");
    let err = FlagshipCredentials::new("http://x/openapi", "", "key", &s).unwrap_err();
    assert!(err.to_string().contains("sid"), "{err}");
    let err = FlagshipCredentials::new(
        "http://x/openapi",
        "sid",
        "key",
        &SecretString::from("nocolon"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("secret:salt"), "{err}");
    assert!(
        !err.to_string().contains("nocolon"),
        "the appsecret itself is never echoed"
    );
    let err =
        EnterpriseCredentials::new("http://x/openapi2/", "sid", "key", &SecretString::from(""))
            .unwrap_err();
    assert!(err.to_string().contains("appsecret"), "{err}");
}

#[tokio::test]
async fn documented_limits_are_checked_before_sending() {
    use wdt_client::flagship::{
        DefectMode, GetSelfWaitSyncIdListOpen, PdOrder, PdSpec, StockSyncByPd,
    };
    let server = MockServer::start().await;
    let c = client(&server);
    for count in [0, 9, 5001] {
        let err = c
            .call(&GetSelfWaitSyncIdListOpen { count, position: 0 })
            .await
            .unwrap_err();
        assert!(
            matches!(err, VendorError::InvalidRequest { .. })
                && err.to_string().contains("10 and 5000"),
            "{err}"
        );
    }
    let err = c
        .query(&StockQueryDetail {
            page_size: Some(101),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("page_size"), "{err}");
    let take = StockSyncByPd {
        pd_order: PdOrder {
            warehouse_no: "W".repeat(41),
            defect_mode: DefectMode::All,
            remark: String::new(),
            is_post_error: None,
        },
        spec_list: vec![],
    };
    assert!(
        c.call(&take)
            .await
            .unwrap_err()
            .to_string()
            .contains("warehouse_no has 41 characters")
    );
    let take = StockSyncByPd {
        pd_order: PdOrder {
            warehouse_no: "W".into(),
            defect_mode: DefectMode::All,
            remark: String::new(),
            is_post_error: None,
        },
        spec_list: vec![PdSpec {
            spec_no: "A".into(),
            remark: String::new(),
            new_num: "-1".parse().unwrap(),
            defect: false,
        }],
    };
    assert!(
        c.call(&take)
            .await
            .unwrap_err()
            .to_string()
            .contains("negative")
    );
    assert!(
        server.received_requests().await.unwrap().is_empty(),
        "nothing was sent"
    );
}
