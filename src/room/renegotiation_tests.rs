use super::*;

fn outputs(r: &mut Renegotiation) -> Vec<RenegotiationOutput> {
    std::iter::from_fn(|| r.poll_output()).collect()
}

/// Connects, requests changes and creates the offer; returns its id.
fn sent(r: &mut Renegotiation, now: Instant) -> String {
    r.set_connected(true);
    r.request();
    let out = outputs(r);
    let [RenegotiationOutput::CreateOffer { offer_id }] = out.as_slice() else {
        panic!("expected one CreateOffer, got {out:?}");
    };
    let offer_id = offer_id.clone();
    r.offer_created(&offer_id, format!("sdp of {offer_id}"), now);
    assert_eq!(
        outputs(r),
        vec![RenegotiationOutput::SendOffer {
            offer_id: offer_id.clone(),
            sdp: format!("sdp of {offer_id}")
        }]
    );
    offer_id
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn no_offer_before_the_session_is_connected() {
    let mut r = Renegotiation::new("s1");
    r.request();
    assert!(outputs(&mut r).is_empty());
    r.set_connected(true);
    assert_eq!(
        outputs(&mut r),
        vec![RenegotiationOutput::CreateOffer {
            offer_id: "s1-1".into()
        }]
    );
}

#[test]
fn one_offer_in_flight_and_changes_meanwhile_coalesced_into_the_next() {
    let t0 = Instant::now();
    let mut r = Renegotiation::new("s");
    let first = sent(&mut r, t0);
    r.request();
    r.request();
    r.request();
    assert!(
        outputs(&mut r).is_empty(),
        "nothing while an offer is pending"
    );
    r.answer(Some(&first)).expect("answer");
    assert_eq!(
        outputs(&mut r),
        vec![RenegotiationOutput::CreateOffer {
            offer_id: "s-2".into()
        }],
        "three changes, one offer"
    );
    r.offer_created("s-2", "sdp2".into(), t0);
    outputs(&mut r);
    r.answer(None)
        .expect("an answer without offer_id is for the pending offer");
    assert!(outputs(&mut r).is_empty(), "nothing more owed");
}

#[test]
fn no_offer_while_a_client_offer_is_being_answered() {
    let mut r = Renegotiation::new("s");
    r.set_connected(true);
    r.client_offer().expect("nothing pending");
    r.request();
    assert!(outputs(&mut r).is_empty());
    r.client_offer_done();
    assert!(matches!(
        outputs(&mut r).as_slice(),
        [RenegotiationOutput::CreateOffer { .. }]
    ));
}

#[test]
fn glare_refuses_the_client_offer_while_a_server_offer_is_pending() {
    let t0 = Instant::now();
    let mut r = Renegotiation::new("s");
    let offer_id = sent(&mut r, t0);
    let err = r.client_offer().expect_err("glare");
    assert_eq!(err, RoomError::ServerOfferPending);
    assert_eq!(err.to_string(), "server offer pending");
    r.answer(Some(&offer_id)).expect("answer");
    assert!(
        r.client_offer().is_ok(),
        "after the answer the client may offer"
    );
}

#[test]
fn answers_with_nothing_pending_or_for_a_stale_offer_are_refused() {
    let t0 = Instant::now();
    let mut r = Renegotiation::new("s");
    assert_eq!(r.answer(None), Err(RoomError::NoOfferPending));
    let offer_id = sent(&mut r, t0);
    assert_eq!(
        r.answer(Some("s-0")),
        Err(RoomError::StaleAnswer {
            pending: offer_id.clone(),
            got: "s-0".into()
        })
    );
    assert_eq!(
        r.pending_offer_id(),
        Some(offer_id.as_str()),
        "still pending"
    );
    r.answer(Some(&offer_id)).expect("the right one");
    assert_eq!(r.answer(Some(&offer_id)), Err(RoomError::NoOfferPending));
}

#[test]
fn an_offer_still_being_created_cannot_be_answered() {
    let mut r = Renegotiation::new("s");
    r.set_connected(true);
    r.request();
    outputs(&mut r);
    assert_eq!(r.answer(Some("s-1")), Err(RoomError::NoOfferPending));
}

#[test]
fn unanswered_offer_is_resent_identically_at_10_s_and_closed_at_20_s() {
    let t0 = Instant::now();
    let mut r = Renegotiation::new("s");
    let offer_id = sent(&mut r, t0);
    assert_eq!(r.poll_timeout(), Some(t0 + secs(10)));
    r.handle_timeout(t0 + secs(9));
    assert!(outputs(&mut r).is_empty(), "early wake-ups do nothing");
    r.handle_timeout(t0 + secs(10));
    assert_eq!(
        outputs(&mut r),
        vec![RenegotiationOutput::SendOffer {
            offer_id: offer_id.clone(),
            sdp: format!("sdp of {offer_id}")
        }]
    );
    assert_eq!(r.poll_timeout(), Some(t0 + secs(20)));
    r.handle_timeout(t0 + secs(20));
    assert_eq!(outputs(&mut r), vec![RenegotiationOutput::AnswerTimeout]);
    assert_eq!(r.poll_timeout(), None);
    r.handle_timeout(t0 + secs(30));
    assert!(outputs(&mut r).is_empty(), "closed once");
}

#[test]
fn an_answer_after_the_resend_stops_the_timer() {
    let t0 = Instant::now();
    let mut r = Renegotiation::new("s");
    let offer_id = sent(&mut r, t0);
    r.handle_timeout(t0 + secs(10));
    outputs(&mut r);
    r.answer(Some(&offer_id)).expect("answer at 15 s");
    assert_eq!(r.poll_timeout(), None);
    r.handle_timeout(t0 + secs(20));
    assert!(outputs(&mut r).is_empty());
}

#[test]
fn the_timer_stops_while_detached_and_the_offer_is_resent_on_resume() {
    let t0 = Instant::now();
    let mut r = Renegotiation::new("s");
    let offer_id = sent(&mut r, t0);
    r.detach(t0 + secs(4));
    assert_eq!(r.poll_timeout(), None);
    r.handle_timeout(t0 + secs(60));
    assert!(
        outputs(&mut r).is_empty(),
        "no re-send or close while detached"
    );
    r.request();
    assert!(outputs(&mut r).is_empty());

    r.resume(t0 + secs(100));
    assert_eq!(
        outputs(&mut r),
        vec![RenegotiationOutput::SendOffer {
            offer_id: offer_id.clone(),
            sdp: format!("sdp of {offer_id}")
        }]
    );
    // 4 s were waited before the detach: 6 s remain of the first 10.
    assert_eq!(r.poll_timeout(), Some(t0 + secs(106)));
    r.answer(Some(&offer_id)).expect("answer");
    assert!(
        matches!(
            outputs(&mut r).as_slice(),
            [RenegotiationOutput::CreateOffer { .. }]
        ),
        "the change requested while detached is offered after the answer"
    );
}

#[test]
fn no_offer_is_created_while_detached() {
    let t0 = Instant::now();
    let mut r = Renegotiation::new("s");
    r.set_connected(true);
    r.detach(t0);
    r.request();
    assert!(outputs(&mut r).is_empty());
    r.resume(t0 + secs(1));
    assert!(matches!(
        outputs(&mut r).as_slice(),
        [RenegotiationOutput::CreateOffer { .. }]
    ));
}

#[test]
fn an_offer_created_while_detached_is_sent_on_resume() {
    let t0 = Instant::now();
    let mut r = Renegotiation::new("s");
    r.set_connected(true);
    r.request();
    outputs(&mut r);
    r.detach(t0);
    r.offer_created("s-1", "sdp".into(), t0);
    assert!(outputs(&mut r).is_empty());
    assert_eq!(r.poll_timeout(), None);
    r.resume(t0 + secs(3));
    assert_eq!(
        outputs(&mut r),
        vec![RenegotiationOutput::SendOffer {
            offer_id: "s-1".into(),
            sdp: "sdp".into()
        }]
    );
    assert_eq!(r.poll_timeout(), Some(t0 + secs(13)));
}

#[test]
fn a_failed_offer_keeps_the_changes_owed() {
    let mut r = Renegotiation::new("s");
    r.set_connected(true);
    r.request();
    outputs(&mut r);
    r.offer_failed("s-1");
    assert_eq!(r.pending_offer_id(), None);
    r.set_connected(true);
    assert_eq!(
        outputs(&mut r),
        vec![RenegotiationOutput::CreateOffer {
            offer_id: "s-2".into()
        }]
    );
}
