//! Audio codec, framing and resampling: no WebRTC types here.
