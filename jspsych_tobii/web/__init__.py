"""
The server's HTTP side, on the same port as the WebSocket: the live status
page and C{/status.json} (L{jspsych_tobii.web.status}), the experiment
folder of C{--serve} (L{jspsych_tobii.web.static}), and the twisted.web Site
that sends WebSocket upgrades to the jsPsych protocol and everything else
to these (L{jspsych_tobii.web.site}).
"""
