"""PulledSubscription over real rclpy / Fast DDS (loopback only): take, close wakes a take, close
twice."""

from __future__ import annotations

import threading
import time

DOMAIN_ID = 77


def test_take_then_close_wakes_a_waiting_take_and_is_idempotent():
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from rclpy.signals import SignalHandlerOptions
    from std_msgs.msg import String

    from depth_node_harness import ros_env
    from mono_depth_ros.ros.pulled_subscription import PulledSubscription

    ros_env(DOMAIN_ID)
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=DOMAIN_ID, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("pulled_subscription_test", context=ctx)
    try:
        sub = PulledSubscription(node, String, "pulled", qos_profile_sensor_data, depth=1)
        pub = node.create_publisher(String, "pulled", qos_profile_sensor_data)
        got = None
        end = time.monotonic() + 10
        while got is None and time.monotonic() < end:  # until discovery has matched them
            pub.publish(String(data="hello"))
            got = sub.take(0.2)
        assert got is not None and got[0].data == "hello" and sub.taken >= 1
        assert isinstance(got[1], int) and got[1] > 0  # reception time, ns

        result = {}
        waiter = threading.Thread(target=lambda: result.update(r=sub.take(30.0)))
        waiter.start()
        time.sleep(0.3)  # the waiter is inside the wait set now
        sub.close()
        waiter.join(5)  # woken by close, not after its 30 s
        assert not waiter.is_alive() and result["r"] is None
        sub.close()  # a second close does nothing (no error from the destroyed guard condition)
        assert sub.take(0.1) is None
    finally:
        node.destroy_node()
        rclpy.shutdown(context=ctx)
